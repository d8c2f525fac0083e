"""Alert rules and detection: pure, no services."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.alerts.detect import Candidates, merge, note
from pipeline.alerts.rules import Rules
from pipeline.errors import SettingsError
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer

T0 = 1_764_374_400_000  # on a 15-minute boundary


def test_packaged_rules_load_with_their_documented_defaults() -> None:
    rules = Rules.load()
    assert rules.outcomes == {"exception", "exceededCpu", "exceededMemory", "scriptNotFound"}
    assert rules.outcome.severity == "critical"
    assert rules.outcome.cooldown_ms == 15 * 60_000
    assert rules.regression.severity == "critical"
    assert rules.rate_limit_threshold("github") == 100
    assert rules.rate_limit_threshold("openai") == 10


def test_a_users_file_overrides_only_what_it_says(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[outcome]\ncooldown = "1h"\n[error_log]\nenabled = false\n')
    rules = Rules.load(str(path))
    assert rules.outcome.cooldown_ms == 3_600_000
    assert rules.outcome.severity == "critical"  # kept from the packaged file
    assert not rules.error_log.enabled


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[outcome]\nseverity = 'loud'\n", "severity"),
        ("[outcome]\ncooldown = 'soon'\n", "cooldown"),
        ("[outcome]\ncooldown = 'nan'\n", "cooldown"),  # issue 17: was a ValueError
        ("[outcome]\ncooldown = 'inf'\n", "cooldown"),  # was an OverflowError
        ("[stalled]\nafter = '-5m'\n", "after"),
        ("[error_log]\nenabled = 'false'\n", "enabled"),  # was taken as true
        ("[error_log]\npattern = '('\n", "pattern"),
        ("[outcome]\ncolour = 'red'\n", "colour"),
        ("[mystery]\nenabled = true\n", "rules.toml"),
        ("[rate_limit]\nbelow = { github = -1 }\n", "below"),
    ],
)
def test_a_bad_rules_file_names_the_problem(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=named):
        Rules.load(str(path))


def test_one_candidate_per_key_and_window_counted() -> None:
    rule = Rules.load().outcome
    found: Candidates = {}
    for minute in (0, 1, 14, 15, 29):
        note(found, rule, "outcome:a:exception", "a", T0 + minute * 60_000, f"at {minute}")
    assert sorted((w - T0) // 60_000 for _, w in found) == [0, 15]
    first, second = (found[k] for k in sorted(found))
    assert (first.occurrences, second.occurrences) == (3, 2)
    assert first.summary == "at 14"
    other: Candidates = {}
    note(other, rule, "outcome:a:exception", "a", T0 + 5 * 60_000, "elsewhere")
    merge(found, other)
    assert found[("outcome:a:exception", T0)].occurrences == 4
    assert found[("outcome:a:exception", T0)].id == other[("outcome:a:exception", T0)].id


def test_merging_a_new_key_copies_the_candidate() -> None:
    """A batch's candidates are merged into the flush's again when the flush is retried: the
    merged-in one must be a copy, or a retry would count it twice."""
    rule = Rules.load().outcome
    found: Candidates = {}
    other: Candidates = {}
    note(other, rule, "outcome:a:exception", "a", T0, "first", {"script": "a"})
    merge(found, other)
    merge(found, other)
    [(key, merged)] = found.items()
    assert merged is not other[key]
    assert (merged.occurrences, other[key].occurrences) == (2, 1)
    assert (merged.summary, merged.details) == ("first", other[key].details)


def _trace(outcome: str, message: str, level: str = "error") -> bytes:
    import orjson

    return orjson.dumps(
        {"scriptName": "w", "outcome": outcome, "eventTimestamp": T0,
         "logs": [{"level": level, "message": [message], "timestamp": T0}], "exceptions": []}
    )  # fmt: skip


def test_transform_notes_outcomes_and_matching_error_lines_only() -> None:
    transformer = Transformer(Extractor.from_files(), Rules.load())
    batch = Batch()
    messages = [
        _trace("ok", "all fine"),
        _trace("exception", "boom"),
        _trace("ok", "FATAL: disk gone"),
        _trace("ok", "fatal but only a warning", level="warn"),
        _trace("ok", "token=abcdef123456 fatal"),
    ]
    for offset, value in enumerate(messages):
        transformer.add(batch, "t", 0, offset, T0, None, value)
    alerts = batch.parts[("t", 0)].rollups.alerts
    keys = sorted(key for key, _ in alerts)
    assert keys == ["error_log:w", "outcome:w:exception"]
    error_log = alerts[("error_log:w", T0)]
    assert error_log.occurrences == 2
    assert "abcdef123456" not in error_log.summary  # summaries come from redacted text


def test_windowed_rules_fire_strictly_above_with_enough_requests() -> None:
    from pipeline.alerts.windows import decide

    rules = Rules.load()  # error rate > 20% with >= 50 requests; p95 > 5000 ms with >= 50

    def fired(requests: int, errors: int, p95: float | None) -> list[str]:
        return [name for name, _ in decide(rules, requests, errors, p95, rate=True, slow=True)]

    assert fired(50, 11, None) == ["error_rate"]
    assert fired(50, 10, None) == []  # exactly 20%: not above
    assert fired(49, 49, 9000) == []  # too few requests for either
    assert fired(50, 0, 5000.0) == []
    assert fired(50, 0, 5001.0) == ["slow"]
    assert fired(200, 100, 6000) == ["error_rate", "slow"]


def test_durations_take_every_unit(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[outcome]\ncooldown = "90s"\n[stalled]\nafter = "1.5m"\n'
                    '[regression]\ncooldown = 600\n[slow]\nwindow = "1d"\n')  # fmt: skip
    rules = Rules.load(str(path))
    assert rules.outcome.cooldown_ms == 90_000
    assert rules.stalled_after_ms == 90_000
    assert rules.regression.cooldown_ms == 600_000  # a bare number: seconds
    assert rules.slow_window_h == 24


def test_a_window_must_be_whole_hours(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[error_rate]\nwindow = "90m"\n')
    with pytest.raises(SettingsError, match="whole hours"):
        Rules.load(str(path))


def test_ewma_baseline_and_anomaly_decision() -> None:
    from pipeline.alerts.windows import anomalous, ewma

    assert ewma([0.05, 0.05, 0.05], 0.3) == (0.05, 0.0)
    mean, std = ewma([0.04, 0.06, 0.04, 0.06], 0.3)
    assert 0.04 < mean < 0.06
    assert 0 < std < 0.02
    flat = [0.05] * 7
    assert not anomalous(flat, 0.10, 3.0, 0.3, 0.02)[0]  # 0.05 + 3 x 0.02 = 0.11: not above
    assert anomalous(flat, 0.12, 3.0, 0.3, 0.02)[0]
    assert not anomalous([100.0, 300.0, 100.0, 300.0], 420.0, 3.0, 0.3, 10.0)[0]
