"""Alert rules: the packaged `rules.toml`, or a user's file (`TAILPIPE_ALERT_RULES`).

Read once, validated on creation: a bad file is a `SettingsError` naming the file, the rule and
the key (exit code 2), whatever the file holds. Durations (`cooldown`, `window`, `after`) use
the one grammar of `pipeline.parse.duration`; numbers are finite; counts are integers. Rules
are frozen dataclasses; evaluating them is pure (`alerts.detect`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline import datafile, parse
from pipeline.alerts.conditions import MAX_COUNT, SEVERITIES, Condition, parse_conditions
from pipeline.errors import SettingsError

__all__ = ["MAX_COUNT", "SEVERITIES", "Rule", "Rules"]

MAX_ANOMALY_DAYS = 366
"""The anomaly baseline reads one row per day and script: at most a year of them."""


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
    error_rate: Rule
    slow: Rule
    error_rate_window_h: int = 1
    error_rate_above: float = 0.2
    error_rate_min_requests: int = 50
    slow_window_h: int = 1
    slow_p95_above_ms: float = 5000.0
    slow_min_requests: int = 50
    stalled: Rule = Rule("stalled", enabled=False)
    stalled_after_ms: int = 300_000
    anomaly: Rule = Rule("anomaly", enabled=False)
    anomaly_k: float = 3.0
    anomaly_alpha: float = 0.3
    anomaly_days: int = 14
    anomaly_min_days: int = 3
    anomaly_min_requests: int = 50
    anomaly_min_rate_std: float = 0.02
    anomaly_min_p95_std_ms: float = 50.0
    rate_limit_below: dict[str, int] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    """Aggregate conditions per script, each an alert with a state (`alerts.conditions`)."""

    def enabled(self) -> list[str]:
        """The names of the rules that can raise an alert."""
        rules = (getattr(self, f.name) for f in fields(self))
        return [r.name for r in rules if isinstance(r, Rule) and r.enabled]

    def rate_limit_threshold(self, provider: str) -> int | None:
        return self.rate_limit_below.get(provider, self.rate_limit_below.get("*"))

    @classmethod
    def load(cls, path: str = "") -> Rules:
        label, doc = datafile.packaged_from("pipeline.alerts", "rules.toml")
        if path:
            label, user = datafile.user(path)
            label = parse.shown(label)
            unknown = set(user) - set(doc) - {"condition"}
            if unknown:
                raise SettingsError(
                    label, f"rules among {', '.join(sorted(doc))}", sorted(unknown)[0]
                )
            for name, table in user.items():
                if name != "condition" and not isinstance(table, dict):
                    raise SettingsError(f"{label}: [{name}]", "a table of settings", table)
            merged = {name: {**doc[name], **user.get(name, {})} for name in doc}
            # A user's conditions replace the packaged ones (there are none today).
            doc = {**merged, "condition": user.get("condition", doc.get("condition", []))}
        return cls.from_document(label, doc)

    @classmethod
    def from_document(cls, label: str, doc: dict[str, Any]) -> Rules:
        conditions = parse_conditions(label, doc.get("condition"))
        names = {n for n in doc if n != "condition"}
        clash = next((c.name for c in conditions if c.name in names), None)
        if clash is not None:
            raise SettingsError(f"{label}: [[condition]] name", "a name no rule has", clash)

        def table(name: str) -> dict[str, Any]:
            found = doc.get(name, {})
            if not isinstance(found, dict):
                raise SettingsError(f"{label}: [{name}]", "a table of settings", found)
            return found

        def rule(name: str, *extra: str) -> Rule:
            settings = table(name)
            parse.check_keys(
                f"{label}: [{name}]", settings, ("enabled", "severity", "cooldown", *extra)
            )
            where = f"{label}: [{name}]"
            severity = settings.get("severity", "warning")
            if severity not in SEVERITIES:
                raise SettingsError(f"{where} severity", "critical or warning", severity)
            return Rule(
                name,
                enabled=_boolean(f"{where} enabled", settings.get("enabled", True)),
                severity=severity,
                cooldown_ms=parse.duration_ms(f"{where} cooldown", settings.get("cooldown", "15m")),
            )

        def number(name: str, key: str, default: float) -> float:
            where, raw = f"{label}: [{name}] {key}", table(name).get(key, default)
            value = parse.number(where, raw, "a number >= 0")
            if value < 0:
                raise SettingsError(where, "a number >= 0", raw)
            return value

        def count(name: str, key: str, default: int, high: int = MAX_COUNT) -> int:
            where = f"{label}: [{name}] {key}"
            raw = table(name).get(key, default)
            return parse.integer(where, raw, 0, high, f"an integer from 0 to {high}")

        def hours(name: str) -> int:
            """A window in whole hours (the grain of the rollups it is read from)."""
            where = f"{label}: [{name}] window"
            ms = parse.duration_ms(where, table(name).get("window", "1h"))
            if ms % 3_600_000:
                raise SettingsError(where, "whole hours, such as 1h or 3h", ms)
            return ms // 3_600_000

        raw_pattern = table("error_log").get("pattern", "$^")
        if not isinstance(raw_pattern, str):
            raise SettingsError(
                f"{label}: [error_log] pattern", "a regular expression", raw_pattern
            )
        try:
            pattern = re.compile(raw_pattern)
        except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}, ((((...
            raise SettingsError(
                f"{label}: [error_log] pattern", "a regular expression", str(exc)
            ) from None
        below = table("rate_limit").get("below", {})
        if not isinstance(below, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT
            for v in below.values()
        ):
            raise SettingsError(
                f"{label}: [rate_limit] below", "a table of provider = count", below
            )
        outcomes = table("outcome").get("outcomes", [])
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
            error_rate=rule("error_rate", "window", "above", "min_requests"),
            slow=rule("slow", "window", "p95_above_ms", "min_requests"),
            error_rate_window_h=hours("error_rate"),
            error_rate_above=number("error_rate", "above", 0.2),
            error_rate_min_requests=count("error_rate", "min_requests", 50),
            slow_window_h=hours("slow"),
            slow_p95_above_ms=number("slow", "p95_above_ms", 5000),
            slow_min_requests=count("slow", "min_requests", 50),
            stalled=rule("stalled", "after"),
            stalled_after_ms=parse.duration_ms(
                f"{label}: [stalled] after", table("stalled").get("after", "5m")
            ),
            anomaly=rule("anomaly", *_ANOMALY_KEYS),
            anomaly_k=number("anomaly", "k", 3.0),
            anomaly_alpha=min(1.0, number("anomaly", "alpha", 0.3)),
            anomaly_days=max(1, count("anomaly", "days", 14, MAX_ANOMALY_DAYS)),
            anomaly_min_days=count("anomaly", "min_days", 3),
            anomaly_min_requests=count("anomaly", "min_requests", 50),
            anomaly_min_rate_std=number("anomaly", "min_rate_std", 0.02),
            anomaly_min_p95_std_ms=number("anomaly", "min_p95_std_ms", 50),
            rate_limit_below=dict(below),
            conditions=conditions,
        )


_ANOMALY_KEYS = ("k", "alpha", "days", "min_days", "min_requests", "min_rate_std",
                 "min_p95_std_ms")  # fmt: skip


def _boolean(where: str, raw: object) -> bool:
    """`true` or `false`: a string such as "false" is refused, not taken as true."""
    if not isinstance(raw, bool):
        raise SettingsError(where, "true or false", raw)
    return raw
