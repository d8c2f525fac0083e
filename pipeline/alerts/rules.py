"""Alert rules: the packaged `rules.toml`, or a user's file (`TAILPIPE_ALERT_RULES`).

Read once, validated on creation: a bad file is a `SettingsError` naming the file, the rule and
the key (exit code 2). Rules are frozen dataclasses; evaluating them is pure (`alerts.detect`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
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
            error_rate=rule("error_rate", "window", "above", "min_requests"),
            slow=rule("slow", "window", "p95_above_ms", "min_requests"),
            error_rate_window_h=_hours(label, "error_rate", doc),
            error_rate_above=_number(label, "error_rate", "above", doc, 0.2),
            error_rate_min_requests=int(_number(label, "error_rate", "min_requests", doc, 50)),
            slow_window_h=_hours(label, "slow", doc),
            slow_p95_above_ms=_number(label, "slow", "p95_above_ms", doc, 5000),
            slow_min_requests=int(_number(label, "slow", "min_requests", doc, 50)),
            stalled=rule("stalled", "after"),
            stalled_after_ms=_duration_ms(
                f"{label}: [stalled] after", doc.get("stalled", {}).get("after", "5m")
            ),
            anomaly=rule("anomaly", *_ANOMALY_KEYS),
            anomaly_k=_number(label, "anomaly", "k", doc, 3.0),
            anomaly_alpha=min(1.0, _number(label, "anomaly", "alpha", doc, 0.3)),
            anomaly_days=max(1, int(_number(label, "anomaly", "days", doc, 14))),
            anomaly_min_days=int(_number(label, "anomaly", "min_days", doc, 3)),
            anomaly_min_requests=int(_number(label, "anomaly", "min_requests", doc, 50)),
            anomaly_min_rate_std=_number(label, "anomaly", "min_rate_std", doc, 0.02),
            anomaly_min_p95_std_ms=_number(label, "anomaly", "min_p95_std_ms", doc, 50),
            rate_limit_below=dict(below),
        )


_ANOMALY_KEYS = ("k", "alpha", "days", "min_days", "min_requests", "min_rate_std",
                 "min_p95_std_ms")  # fmt: skip


def _number(label: str, rule: str, key: str, doc: dict[str, Any], default: float) -> float:
    raw = doc.get(rule, {}).get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        raise SettingsError(f"{label}: [{rule}] {key}", "a number >= 0", raw)
    return float(raw)


def _hours(label: str, rule: str, doc: dict[str, Any]) -> int:
    """A window in whole hours (the grain of the rollups it is read from)."""
    ms = _duration_ms(f"{label}: [{rule}] window", doc.get(rule, {}).get("window", "1h"))
    if ms % 3_600_000:
        raise SettingsError(f"{label}: [{rule}] window", "whole hours, such as 1h or 3h", ms)
    return ms // 3_600_000
