"""Conditions on aggregates per script, read from the rollups: what an alert's state follows.

A condition is a `[[condition]]` table of the rules file:

```toml
[[condition]]
name = "checkout-errors"   # unique; the alert's rule name
metric = "error_rate"      # see METRICS
above = 0.3                # or `below`
window = "1h"              # whole hours: the rollups' grain ("1h": the current hour)
for = "5m"                 # held this long before it fires (pending meanwhile)
resolve_after = "10m"      # gone this long before it is resolved
min_requests = 20          # fewer requests in the window: no data, the condition does not hold
scripts = ["checkout"]     # optional: only these scripts (else every script, each its own alert)
outcome = "exceededCpu"    # for metric = "outcome_count"
severity = "critical"
```

Each script is its own alert (its group). `value` is pure: given a window's `Aggregate`, the
number compared, or None when the window holds too few requests to say. Validated on
creation: a bad condition is a `SettingsError` naming the file, the condition and the key.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline import parse
from pipeline.alerts.state import MAX_MS, Timing
from pipeline.errors import SettingsError

SEVERITIES = ("critical", "warning")
MAX_COUNT = 2**31 - 1
"""The largest count a rule takes (`min_requests`, `below`): what PostgreSQL's int holds."""
METRICS = (
    "error_rate", "requests", "outcome_count", "p95_wall_ms", "p99_wall_ms", "p95_cpu_ms",
    "p99_cpu_ms", "silence_minutes", "rate_limit_minutes", "rate_limit_remaining",
    "cost_per_hour",
)  # fmt: skip
"""`error_rate`: non-ok outcomes over requests; `outcome_count`: invocations that ended with
`outcome`; the percentiles: of wall or CPU time, from the rollups' sketches; `silence_minutes`:
minutes since the script's last event (the group `*`: since the pipeline last stored anything),
counted only when its usual rate over the window would have sent at least `EXPECTED` events in
that time, so a script that sends twice a day is not missed after an hour;
`rate_limit_minutes`: per provider (its group; `scripts` then lists providers), the minutes
until its rate limit runs out at the current rate (`alerts.forecast`), with `below`;
`rate_limit_remaining`: per provider, the remaining count its newest reading of the day said,
with `below`; `cost_per_hour`: what a script's priced calls (LLM usage) cost over the window,
per hour, in USD."""
EXPECTED = 3.0
"""Events a script's usual rate must predict in its silence before the silence counts."""
_KEYS = ("name", "metric", "above", "below", "window", "for", "resolve_after", "min_requests",
         "scripts", "outcome", "severity", "enabled")  # fmt: skip
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One script's rollups over a condition's window; `percentiles` holds the wall and CPU
    time quantiles its sketches give, by metric name (`p95_wall_ms`...), when it has any."""

    requests: int = 0
    errors: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    percentiles: dict[str, float] = field(default_factory=dict)
    silence_min: float | None = None
    """Minutes since its last event (None: none in the window)."""
    minutes_left: float | None = None
    """A provider's forecast: minutes until its rate limit runs out (None: not running out)."""
    remaining: float | None = None
    """A provider's newest reading of its remaining count."""
    cost_usd: float | None = None
    """What its priced calls cost over the window."""


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    metric: str
    threshold: float
    above: bool
    """True: it holds when the value is above the threshold; False: below it."""
    window_h: int = 1
    timing: Timing = field(default_factory=Timing)
    min_requests: int = 1
    scripts: frozenset[str] = frozenset()
    outcome: str | None = None
    severity: str = "warning"
    enabled: bool = True

    def value(self, agg: Aggregate) -> float | None:
        """The number the threshold is compared with; None without enough requests."""
        metric = self.metric
        if metric == "rate_limit_minutes":
            return agg.minutes_left
        if metric == "rate_limit_remaining":
            return agg.remaining
        if metric == "cost_per_hour":
            return None if agg.cost_usd is None else agg.cost_usd / self.window_h
        if agg.requests < self.min_requests or agg.requests == 0:
            return None
        if metric == "error_rate":
            return agg.errors / agg.requests
        if metric == "requests":
            return float(agg.requests)
        if metric == "outcome_count":
            return float(agg.outcomes.get(self.outcome or "", 0))
        if metric == "silence_minutes":
            if agg.silence_min is None:
                return None
            per_min = agg.requests / (self.window_h * 60)
            return agg.silence_min if per_min * agg.silence_min >= EXPECTED else 0.0
        return agg.percentiles.get(metric)

    def holds(self, agg: Aggregate) -> bool:
        found = self.value(agg)
        if found is None:
            return False
        return found > self.threshold if self.above else found < self.threshold

    def watches(self, script: str) -> bool:
        return not self.scripts or script in self.scripts


def parse_conditions(label: str, raw: object) -> tuple[Condition, ...]:
    """The `[[condition]]` tables of the rules file at `label`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SettingsError(f"{label}: condition", "an array of tables ([[condition]])", raw)
    found: list[Condition] = []
    for i, table in enumerate(raw):
        where = f"{label}: [[condition]] #{i + 1}"
        if not isinstance(table, dict):
            raise SettingsError(where, "a table", table)
        one = _condition(where, table)
        if any(c.name == one.name for c in found):
            raise SettingsError(f"{where} name", "a name no other condition has", one.name)
        found.append(one)
    return tuple(found)


def _condition(where: str, table: dict[str, Any]) -> Condition:
    parse.check_keys(where, table, _KEYS)
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SettingsError(f"{where} name", "lower-case letters, digits, - and _", name)
    where = f"{where.split(' #')[0]} {name}"
    metric = table.get("metric")
    if metric not in METRICS:
        raise SettingsError(f"{where} metric", f"one of {', '.join(METRICS)}", metric)
    if ("above" in table) == ("below" in table):
        raise SettingsError(f"{where} above", "either above or below", "both or neither")
    key = "above" if "above" in table else "below"
    if metric == "silence_minutes" and key == "below":
        raise SettingsError(f"{where} above", "above: the minutes of silence", "below")
    if metric.startswith("rate_limit") and key == "above":
        raise SettingsError(f"{where} below", "below: the minutes left", "above")
    threshold = parse.number(f"{where} {key}", table[key], "a number")
    outcome = table.get("outcome")
    if (metric == "outcome_count") != (outcome is not None):
        raise SettingsError(f"{where} outcome", "an outcome with metric outcome_count, only",
                            outcome)  # fmt: skip
    if outcome is not None and (not isinstance(outcome, str) or not 0 < len(outcome) <= 64):
        raise SettingsError(f"{where} outcome", "an outcome name", outcome)
    window_ms = parse.duration_ms(f"{where} window", table.get("window", "1h"))
    if window_ms % HOUR_MS or window_ms > 24 * 7 * HOUR_MS:
        raise SettingsError(f"{where} window", "whole hours, at most 168h", table.get("window"))
    timing = Timing(
        _span(f"{where} for", table.get("for", 0)),
        _span(f"{where} resolve_after", table.get("resolve_after", 0)),
        name,
    )
    scripts = table.get("scripts", [])
    if not isinstance(scripts, list) or not all(isinstance(s, str) and s for s in scripts):
        raise SettingsError(f"{where} scripts", "a list of script names", scripts)
    severity = table.get("severity", "warning")
    if severity not in SEVERITIES:
        raise SettingsError(f"{where} severity", "critical or warning", severity)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SettingsError(f"{where} enabled", "true or false", enabled)
    return Condition(
        name, metric, threshold, key == "above", window_ms // HOUR_MS, timing,
        parse.integer(f"{where} min_requests", table.get("min_requests", 1), 1, MAX_COUNT,
                      f"an integer from 1 to {MAX_COUNT}"),
        frozenset(scripts), outcome, severity, enabled,
    )  # fmt: skip


def _span(where: str, raw: object) -> int:
    """`for` and `resolve_after`: a duration, or 0 (at once)."""
    if raw == 0 or raw in ("0", "0s"):
        return 0
    ms = parse.duration_ms(where, raw)
    if ms > MAX_MS:
        raise SettingsError(where, "a duration of at most 366d", raw)
    return ms
