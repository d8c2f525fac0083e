"""An OTLP invocation completed by its trace's root span.

Workers Observability exports an invocation's logs and its spans to two destinations. The logs
say what was asked (the method, URL and status, the console lines) but not how it ended: the
outcome and the CPU and wall time are attributes of the trace's root span
(docs/events.md, section 6). The logs decoder stores such an invocation as `unreported`, with no
CPU or wall time, and this module says what its root span tells, once both are stored:

- `told(attributes, duration_us)`: what a root span says. The outcome is
  `cloudflare.outcome`; CPU and wall time are the first number under each of the names
  Cloudflare's docs and its captures use (`otlp_logs.CPU_KEYS`, `WALL_KEYS`); a root span
  without a wall time has its own duration, which is the handler's.
- `awaits_root_span(invocation)`: a Cloudflare invocation record decoded without an outcome or
  times. Not a fragment (`Invocation.fragment`: it was never counted as a request, so there is
  nothing of it to complete), and not an SDK's log group (`otel`: its trace's root span is
  whatever the service measured, not its handler).
- `completed(before, root)`: the invocation with what it lacked filled in, or None when the
  root span adds nothing. A reported outcome is never replaced, nor is a time the logs gave.

Values a column cannot hold are not told: a time outside 0 .. 2**31 - 1 ms (`integer`), an
outcome longer than an index key. A bad span attribute must not fail the flush that would
store it, which would stop the partition. Pure: the flush (`pipeline.postgres.completion`)
finds the pairs and the API (`api/invocations.py`) fills the rows stored before either did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from pipeline.formats.fields import MAX_DURATION_MS, MAX_NAME_BYTES
from pipeline.formats.invocation import Invocation
from pipeline.formats.otlp_logs import CPU_KEYS, EVENT_TYPE, SOURCE, UNREPORTED, WALL_KEYS

OUTCOME_KEY = "cloudflare.outcome"


class Told(NamedTuple):
    """An invocation's outcome and times, as its row holds them (None: not known)."""

    outcome: str | None
    cpu_ms: int | None
    wall_ms: int | None


def awaits_root_span(inv: Invocation) -> bool:
    return (
        inv.source == SOURCE
        and inv.cpu_ms is None
        and inv.wall_ms is None
        and not inv.fragment
        and inv.event_type != EVENT_TYPE
    )


def stored_row_awaits(event_type: str, has_handler_or_trigger: bool) -> bool:
    """`awaits_root_span` of an OTLP row stored without times, from what the row kept: the
    decoder gives a fragment, and only a fragment, the event type `unknown` with neither
    `cloudflare.handler_type` nor `faas.trigger` in `extra` (an invocation record has one of
    them: a known one becomes the event type, an unknown one stays in `extra`)."""
    return event_type != EVENT_TYPE and (event_type != "unknown" or has_handler_or_trigger)


def told(attributes: Mapping[str, object], duration_us: int) -> Told:
    """What a root span says of its invocation."""
    outcome = attributes.get(OUTCOME_KEY)
    if not (type(outcome) is str and outcome and _fits_a_key(outcome)):
        outcome = None
    wall = _first_ms(attributes, WALL_KEYS)
    if wall is None and 0 <= duration_us // 1000 <= MAX_DURATION_MS:
        wall = round(duration_us / 1000)
    return Told(outcome, _first_ms(attributes, CPU_KEYS), wall)


def completed(before: Told, root: Told) -> Told | None:
    """`before` with its unreported outcome and missing times taken from `root`; None when that
    changes nothing."""
    outcome = root.outcome if before.outcome == UNREPORTED and root.outcome else before.outcome
    after = Told(
        outcome,
        before.cpu_ms if before.cpu_ms is not None else root.cpu_ms,
        before.wall_ms if before.wall_ms is not None else root.wall_ms,
    )
    return None if after == before else after


def filled(before: Told, after: Told) -> list[str]:
    """The names of the fields `after` filled in."""
    return [name for name, old, new in zip(Told._fields, before, after, strict=True) if old != new]


def _first_ms(attributes: Mapping[str, object], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            ms = round(value)
            return ms if 0 <= ms <= MAX_DURATION_MS else None
    return None


def _fits_a_key(value: str) -> bool:
    return len(value) <= MAX_NAME_BYTES // 4 or len(value.encode("utf-8", "replace")) <= (
        MAX_NAME_BYTES
    )
