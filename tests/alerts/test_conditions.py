"""Aggregate conditions per script (`[[condition]]` in the rules file): validated on load, a bad
one naming file, condition and key (exit 2 for `tailpipe run`), and evaluated on a window's
numbers. Pure, no services."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.alerts.conditions import Aggregate, Condition
from pipeline.alerts.rules import Rules
from pipeline.alerts.state import Timing
from pipeline.errors import SettingsError
from tests.conftest import tailpipe

GOOD = """
[[condition]]
name = "checkout-errors"
metric = "error_rate"
above = 0.3
window = "2h"
for = "5m"
resolve_after = "10m"
min_requests = 20
scripts = ["checkout"]
severity = "critical"

[[condition]]
name = "slow-p99"
metric = "p99_wall_ms"
above = 2500

[[condition]]
name = "cpu-kills"
metric = "outcome_count"
outcome = "exceededCpu"
above = 0
"""


def load(tmp_path: Path, text: str) -> Rules:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return Rules.load(str(path))


def test_conditions_load_with_their_keys(tmp_path: Path) -> None:
    rules = load(tmp_path, GOOD)
    first, slow, kills = rules.conditions
    assert first == Condition(
        "checkout-errors", "error_rate", 0.3, True, 2, Timing(300_000, 600_000, "checkout-errors"),
        20, frozenset({"checkout"}), None, "critical",
    )  # fmt: skip
    assert (slow.metric, slow.window_h, slow.timing, slow.min_requests) == (
        "p99_wall_ms", 1, Timing(0, 0, "slow-p99"), 1,
    )  # fmt: skip
    assert kills.outcome == "exceededCpu"
    assert rules.outcome.enabled  # the packaged rules stay
    assert Rules.load().conditions == ()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[[condition]]\nname = 'x'\nmetric = 'loudness'\nabove = 1\n", "condition]] x metric"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\n", "condition]] x above"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nbelow = 2\n",
         "condition]] x above"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 'lots'\n", "condition]] x above"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nwindow = '90m'\n",
         "condition]] x window"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nfor = 'soon'\n",
         "condition]] x for"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nresolve_after = '999d'\n",
         "condition]] x resolve_after"),
        ("[[condition]]\nname = 'x'\nmetric = 'outcome_count'\nabove = 1\n",
         "condition]] x outcome"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\noutcome = 'ok'\n",
         "condition]] x outcome"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nmin_requests = 0\n",
         "condition]] x min_requests"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nscripts = 'all'\n",
         "condition]] x scripts"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\nseverity = 'loud'\n",
         "condition]] x severity"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\ncolour = 'red'\n",
         "condition]] #1: colour"),
        ("[[condition]]\nname = 'Bad Name'\nmetric = 'requests'\nabove = 1\n",
         "condition]] #1 name"),
        ("[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 1\n"
         "[[condition]]\nname = 'x'\nmetric = 'requests'\nabove = 2\n", "condition]] #2 name"),
        ("[[condition]]\nname = 'outcome'\nmetric = 'requests'\nabove = 1\n", "condition]] name"),
        ("condition = 5\n", "condition"),
    ],
)  # fmt: skip
def test_a_bad_condition_names_file_condition_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, text)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_condition_stops_tailpipe_run_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[condition]]\nname = 'x'\nmetric = 'loudness'\nabove = 1\n")
    result = tailpipe("run", env={"TAILPIPE_ALERT_RULES": str(path), "TAILPIPE_METRICS_PORT": "0"})
    assert result.returncode == 2
    assert result.stderr.startswith(f"tailpipe: {path}: [[condition]] x metric: expected one of")
    assert result.stderr.count("\n") == 1


def test_each_metric_on_a_window() -> None:
    agg = Aggregate(40, 14, Counter({"ok": 26, "exception": 10, "exceededCpu": 4}),
                    {"p95_wall_ms": 900.0, "p99_wall_ms": 3100.0, "p95_cpu_ms": 12.0})  # fmt: skip

    def cond(metric: str, threshold: float, above: bool = True, **more: object) -> Condition:
        return Condition("c", metric, threshold, above, **more)  # type: ignore[arg-type]

    assert cond("error_rate", 0.3).value(agg) == 14 / 40
    assert cond("error_rate", 0.3).holds(agg)
    assert not cond("error_rate", 0.35).holds(agg)  # strictly above
    assert cond("requests", 50, above=False).holds(agg)
    assert cond("outcome_count", 3, outcome="exceededCpu").holds(agg)
    assert not cond("outcome_count", 0, outcome="exceededMemory").holds(agg)
    assert cond("p99_wall_ms", 2500).holds(agg)
    assert not cond("p95_wall_ms", 2500).holds(agg)
    assert cond("p99_cpu_ms", 1).value(agg) is None  # no sketch: no data
    # Too few requests, or none: no data, so it does not hold, whichever way it points.
    assert not cond("error_rate", 0.1, min_requests=50).holds(agg)
    assert not cond("requests", 1, above=False).holds(Aggregate())
    assert cond("error_rate", 0.1, scripts=frozenset({"a"})).watches("a")
    assert not cond("error_rate", 0.1, scripts=frozenset({"a"})).watches("b")


def test_silence_counts_only_against_the_usual_rate() -> None:
    quiet = Condition("q", "silence_minutes", 15, True, window_h=24)
    busy = Aggregate(24 * 60, silence_min=20.0)  # one a minute: 20 missed
    rare = Aggregate(2, silence_min=300.0)  # two a day: 0.4 expected in 5 hours
    assert quiet.value(busy) == 20.0
    assert quiet.holds(busy)
    assert quiet.value(rare) == 0.0
    assert not quiet.holds(rare)
    assert quiet.value(Aggregate(100)) is None  # no event in the window: no data


def test_silence_takes_above_only(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, "[[condition]]\nname = 'q'\nmetric = 'silence_minutes'\nbelow = 5\n")
    assert "q above" in str(caught.value)
