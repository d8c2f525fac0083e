"""The transform's redaction fast path stores exactly what the full redaction walk would."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import DecodeError
from pipeline.formats.decode import decode
from pipeline.formats.invocation import Invocation
from pipeline.kafka import synth
from pipeline.transform.redact.engine import _json_text, redact_json, redact_json_text
from pipeline.transform.rollup import Rollups, count_invocation

SECRETS = st.sampled_from(
    [
        "Bearer abcdef1234567890",
        "ghp_" + "a1" * 18,
        "sk-ant-api03-" + "x9" * 20,
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "https://u:hunter2@db.example/x",
        "?token=s3cr3t&page=2",
        "password=letmein",
        "pass%77ord",
    ]
)
KEYS = st.one_of(
    st.sampled_from(["token", "apiKey", "client_secret", "Authorization", "ms", "repo", "%70w"]),
    st.text(max_size=8),
)
# Values as orjson.loads produces them (64-bit integers), which is all the decoder hands over.
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), SECRETS, st.text(max_size=30)
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


def full_walk(value: Any) -> tuple[str | None, Counter[str]]:
    counts: Counter[str] = Counter()
    return (_json_text(redact_json(value, counts)) if value else None), counts


@given(st.dictionaries(KEYS, VALUES, max_size=5))
@settings(max_examples=1500, deadline=None)
def test_fast_path_equals_full_walk(value: dict[str, Any]) -> None:
    counts: Counter[str] = Counter()
    assert (redact_json_text(value, counts), counts) == full_walk(value)


def test_fast_path_on_synthetic_load() -> None:
    for message in itertools.islice(synth.messages(21, 1_764_374_400_000), 3000):
        try:
            invocations = decode(message.value)
        except DecodeError:
            continue
        for inv in invocations:
            for value in (inv.extra, *(line.data for line in inv.logs)):
                counts: Counter[str] = Counter()
                assert (redact_json_text(value, counts), counts) == full_walk(value)
    assert orjson.loads(redact_json_text({"token": "x"}, Counter()) or "{}") != {"token": "x"}


def test_an_error_groups_alike_with_or_without_its_stack_header() -> None:
    """The row names the subclass from the header; the fingerprint is the runtime's name and
    the message's, so the same error without the header lands in the same group."""
    from pipeline.transform.batch import Batch
    from pipeline.transform.extract import Extractor
    from pipeline.transform.transformer import LOG_COLUMNS, Transformer

    def exception_row(stack: str) -> dict[str, Any]:
        item = {"scriptName": "w", "outcome": "exception", "eventTimestamp": 1764374400000,
                "exceptions": [{"name": "Error", "message": "quota exceeded for 42",
                                "stack": stack, "timestamp": 1764374400000}]}  # fmt: skip
        batch = Batch()
        Transformer(Extractor.from_files()).add(batch, "t", 0, 0, 0, None, orjson.dumps(item))
        [part] = batch.parts.values()
        [row] = part.logs
        return dict(zip(LOG_COLUMNS, row, strict=True))

    frames = "    at check (worker.js:10:11)"
    with_header = exception_row(f"CustomError: quota exceeded for 42\n{frames}")
    without = exception_row(frames)
    assert with_header["exception_name"] == "CustomError"
    assert with_header["message"] == "CustomError: quota exceeded for 42"
    assert with_header["stack"] == without["stack"] == frames
    assert with_header["fingerprint"] == without["fingerprint"]


def test_only_outcomes_known_to_have_failed_count_as_errors() -> None:
    """`unreported` (an OTLP logs export says no outcome) is counted, not as an error; the
    runtime's own `unknown` still is."""
    rollups = Rollups()
    for outcome in ("ok", "unreported", "exception", "unknown", "exceededCpu"):
        invocation = Invocation(script="w", event_type="fetch", timestamp_ms=0, outcome=outcome)
        count_invocation(rollups, invocation, 0, "w")
    (hour,) = rollups.hourly.values()
    assert (hour.requests, hour.errors) == (5, 3)
