"""Alert rules: the packaged `rules.toml`, or a user's file (`TAILPIPE_ALERT_RULES`).

Read once, validated on creation: a bad file is a `SettingsError` naming the file, the rule and
the key (exit code 2). Rules are frozen dataclasses; evaluating them is pure (`alerts.detect`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import SettingsError
from pipeline.extract import datafile

SEVERITIES = ("critical", "warning")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_ms(where: str, raw: object) -> int:
    text = str(raw)
    scale = _UNITS.get(text[-1:], 0)
    try:
        value = float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise SettingsError(where, "a duration like 15m, 1h or 30s", raw)
    return int(value * 1000)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    enabled: bool = True
    severity: str = "warning"
    cooldown_ms: int = 900_000

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise SettingsError(
                f"alert rule {self.name}: severity", "critical or warning", self.severity
            )

    def window_start(self, ms: int) -> int:
        """The cooldown window an occurrence at `ms` falls in: its alert is that window's."""
        return ms - ms % self.cooldown_ms


@dataclass(frozen=True, slots=True)
class Rules:
    outcome: Rule
    outcomes: frozenset[str]
    error_log: Rule
    error_pattern: re.Pattern[str]
    new_error: Rule
    regression: Rule
    rate_limit: Rule
    guard_rail: Rule
    rate_limit_below: dict[str, int] = field(default_factory=dict)

    def rate_limit_threshold(self, provider: str) -> int | None:
        return self.rate_limit_below.get(provider, self.rate_limit_below.get("*"))

    @classmethod
    def load(cls, path: str = "") -> Rules:
        label, doc = datafile.packaged_from("pipeline.alerts", "rules.toml")
        if path:
            label, user = datafile.user(path)
            unknown = set(user) - set(doc)
            if unknown:
                raise SettingsError(
                    label, f"rules among {', '.join(sorted(doc))}", sorted(unknown)[0]
                )
            doc = {name: {**doc[name], **user.get(name, {})} for name in doc}
        return cls.from_document(label, doc)

    @classmethod
    def from_document(cls, label: str, doc: dict[str, Any]) -> Rules:
        def rule(name: str, *extra: str) -> Rule:
            table = doc.get(name, {})
            datafile.check_keys(
                f"{label}: [{name}]", table, ("enabled", "severity", "cooldown", *extra)
            )
            return Rule(
                name,
                enabled=bool(table.get("enabled", True)),
                severity=str(table.get("severity", "warning")),
                cooldown_ms=_duration_ms(
                    f"{label}: [{name}] cooldown", table.get("cooldown", "15m")
                ),
            )

        try:
            pattern = re.compile(str(doc.get("error_log", {}).get("pattern", "$^")))
        except re.error as exc:
            raise SettingsError(
                f"{label}: [error_log] pattern", "a regular expression", str(exc)
            ) from None
        below = doc.get("rate_limit", {}).get("below", {})
        if not isinstance(below, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in below.values()
        ):
            raise SettingsError(
                f"{label}: [rate_limit] below", "a table of provider = count", below
            )
        outcomes = doc.get("outcome", {}).get("outcomes", [])
        if not isinstance(outcomes, list) or not all(isinstance(o, str) for o in outcomes):
            raise SettingsError(f"{label}: [outcome] outcomes", "a list of outcome names", outcomes)
        return cls(
            outcome=rule("outcome", "outcomes"),
            outcomes=frozenset(outcomes),
            error_log=rule("error_log", "pattern"),
            error_pattern=pattern,
            new_error=rule("new_error"),
            regression=rule("regression"),
            rate_limit=rule("rate_limit", "below"),
            guard_rail=rule("guard_rail"),
            rate_limit_below=dict(below),
        )
