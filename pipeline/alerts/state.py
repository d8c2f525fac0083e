"""An alert's state for one rule and group: normal, pending, firing, resolving. Pure.

Prometheus, Grafana and Cloudflare's own Workers alerts agree on the shape, and an on-call
engineer needs both ends of a problem, so each (rule, group) key moves through four states:

```
            holds                 held for `for`
  normal ─────────> pending ───────────────────> firing ──(notify: firing)
    ^  <──────────────┘ stops holding               │  ^
    │                                    stops      │  │ holds again (no notification)
    │          quiet for `resolve_after`  holding   v  │
    └──────────────────────────────────────────── resolving
       (notify: resolved)
```

- A condition that comes and goes within `for` notifies no one (pending, then normal).
- A firing alert that stops holding waits `resolve_after` before it is resolved; holding again
  meanwhile returns it to firing with no second "firing": a flapping condition is one alert.
- `for` and `resolve_after` of 0 step at once: normal -> firing, firing -> normal.

`step` is the whole machine: the state, whether the condition holds, and the time, all given
(no clock is read), so the same inputs give the same changes on any replica. Every change of
state is a `Change` (stored as the alert's history); only firing and resolved are
notifications. The evaluator that feeds it reads the state under a row lock in the
transaction that stores the change, so two replicas never both fire or both resolve a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import SettingsError

STATUSES = ("normal", "pending", "firing", "resolving")
NOTIFIED = ("firing", "resolved")
"""What a change tells the destinations: the alert fired, or it is over."""
MAX_MS = 366 * 86_400_000
"""The longest `for` or `resolve_after`: a year and a day."""


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a condition must hold before it fires (`for_ms`), and be gone before a firing
    alert is resolved (`resolve_after_ms`). Validated on creation: `rule` names it."""

    for_ms: int = 0
    resolve_after_ms: int = 0
    rule: str = "?"

    def __post_init__(self) -> None:
        for key, value in (("for", self.for_ms), ("resolve_after", self.resolve_after_ms)):
            if not 0 <= value <= MAX_MS:
                raise SettingsError(
                    f"alert rule {self.rule}: {key}", "a duration of at most 366d", value
                )


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where a key is, and since when (`since_ms`: when it entered the status); `fired_ms` is
    when its current firing began, kept through resolving."""

    status: str = "normal"
    since_ms: int = 0
    fired_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"alert status {self.status!r}: expected one of {STATUSES}")


@dataclass(frozen=True, slots=True)
class Change:
    """A move from one status to another at `at_ms`; `notify` is "firing", "resolved" or
    None (pending, back to normal from pending, resolving, back to firing)."""

    before: str
    after: str
    at_ms: int
    notify: str | None


NORMAL = AlertState()


def step(
    state: AlertState, holds: bool, now_ms: int, timing: Timing
) -> tuple[AlertState, list[Change]]:
    """The state after observing the condition (`holds`) at `now_ms`, and the changes made on
    the way (at most two: pending and firing at once when `for` is 0). An observation older
    than the state changes nothing: replicas may evaluate out of order."""
    if now_ms < state.since_ms:
        return state, []
    changes: list[Change] = []
    current = state
    while True:
        after = _next(current, holds, now_ms, timing)
        if after is None:
            return current, changes
        notify = _notification(current.status, after.status)
        changes.append(Change(current.status, after.status, now_ms, notify))
        current = after


def _next(state: AlertState, holds: bool, now_ms: int, timing: Timing) -> AlertState | None:
    """One transition, or None when the state stays."""
    status = state.status
    if status == "normal":
        return AlertState("pending", now_ms) if holds else None
    if status == "pending":
        if not holds:
            return AlertState("normal", now_ms)
        if now_ms - state.since_ms >= timing.for_ms:
            return AlertState("firing", now_ms, now_ms)
        return None
    if status == "firing":
        return None if holds else AlertState("resolving", now_ms, state.fired_ms)
    # resolving
    if holds:
        return AlertState("firing", now_ms, state.fired_ms)
    if now_ms - state.since_ms >= timing.resolve_after_ms:
        return AlertState("normal", now_ms)
    return None


def _notification(before: str, after: str) -> str | None:
    if after == "firing" and before == "pending":
        return "firing"
    if after == "normal" and before == "resolving":
        return "resolved"
    return None
