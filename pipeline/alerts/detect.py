"""Alert conditions found while a batch is built or merged: pure, no I/O, no clock.

An occurrence is noted under its dedup key and the rule's cooldown window (by event time), so a
batch holds at most one candidate per key and window, counted, whatever the number of events;
the flush then merges the candidates into `critical_alerts`, where the same key and window
from any replica lands on the same row (one alert per key per window).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from pipeline.alerts.rules import Rule

_NAMESPACE = uuid.UUID("6c1b9e2e-4f0a-4e43-9d8e-7a0c2f1b5d10")
SUMMARY_MAX = 300


@dataclass(slots=True)
class Candidate:
    rule: str
    severity: str
    script: str | None
    dedup_key: str
    window_ms: int
    first_ms: int
    last_ms: int
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    occurrences: int = 1

    @property
    def id(self) -> uuid.UUID:
        """The same for every replica that sees this key in this window: receivers can drop
        repeats by id."""
        return uuid.uuid5(_NAMESPACE, f"{self.dedup_key}|{self.window_ms}")

    def add(self, other: Candidate) -> None:
        self.occurrences += other.occurrences
        self.first_ms = min(self.first_ms, other.first_ms)
        if other.last_ms >= self.last_ms:
            self.last_ms, self.summary = other.last_ms, other.summary


Candidates = dict[tuple[str, int], Candidate]


def note(
    found: Candidates,
    rule: Rule,
    dedup_key: str,
    script: str | None,
    ms: int,
    summary: str,
    query: dict[str, str] | None = None,
) -> None:
    """Count one occurrence of `rule` for `dedup_key` at event time `ms`."""
    window = rule.window_start(ms)
    key = (dedup_key, window)
    seen = found.get(key)
    if seen is not None:
        seen.occurrences += 1
        seen.first_ms = min(seen.first_ms, ms)
        if ms >= seen.last_ms:
            seen.last_ms, seen.summary = ms, summary[:SUMMARY_MAX]
        return
    details = {"query": "/api/logs/recent?" + urlencode(query)} if query else {}
    found[key] = Candidate(
        rule.name, rule.severity, script, dedup_key, window, ms, ms, summary[:SUMMARY_MAX], details
    )


def merge(into: Candidates, other: Candidates) -> None:
    for key, candidate in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = replace(candidate)  # a copy: `other` is merged again on a retry
        else:
            mine.add(candidate)
