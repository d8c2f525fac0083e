"""`spanContext` in trace items and envelopes: the ids read, bad ones dropped and counted,
never a reason to refuse an invocation; formats without ids decode as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.formats.decode import decode
from pipeline.formats.sanitize import FIELDS
from tests.conftest import ROOT

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
FIXTURES = ROOT / "tests" / "fixtures" / "events"


def envelope(**top: Any) -> bytes:
    item = {"envelope": "tailpipe/1", "scriptName": "billing", "outcome": "ok",
            "eventTimestamp": 1767225600123, "event": {"log": {}},
            "logs": [{"timestamp": 1767225600123, "level": "info", "message": ["hi"]}],
            "exceptions": [], **top}  # fmt: skip
    return orjson.dumps(item)


def test_an_envelope_carries_its_trace_and_span() -> None:
    [inv] = decode(envelope(spanContext={"traceId": TRACE, "spanId": SPAN}))
    assert (inv.trace_id, inv.span_id, inv.sanitized) == (TRACE, SPAN, ())
    assert "spanContext" not in inv.extra


def test_other_keys_of_the_span_context_are_kept_in_extra() -> None:
    context = {"traceId": TRACE, "spanId": SPAN, "parentSpanId": "1" * 16, "traceFlags": 1}
    [inv] = decode(envelope(spanContext=context))
    assert inv.extra["spanContext"] == {"parentSpanId": "1" * 16, "traceFlags": 1}


def test_a_streaming_tail_style_trace_item_is_read_too() -> None:
    item = {"scriptName": "w", "outcome": "ok", "eventTimestamp": 1767225600123, "event": {},
            "spanContext": {"traceId": TRACE.upper()}}  # fmt: skip
    [inv] = decode(orjson.dumps(item))
    assert (inv.trace_id, inv.span_id, inv.sanitized) == (TRACE, None, ())


@pytest.mark.parametrize(
    ("context", "dropped", "kept"),
    [
        ({"traceId": "0" * 32, "spanId": SPAN}, ("trace_id", "span_id"), (None, None)),
        ({"traceId": TRACE, "spanId": "0" * 16}, ("span_id",), (TRACE, None)),
        ({"traceId": TRACE[:-1], "spanId": SPAN}, ("trace_id", "span_id"), (None, None)),
        ({"traceId": TRACE, "spanId": "xyz" + SPAN[3:]}, ("span_id",), (TRACE, None)),
        ({"traceId": 42, "spanId": SPAN}, ("trace_id", "span_id"), (None, None)),
        ({"traceId": TRACE, "spanId": ["a"]}, ("span_id",), (TRACE, None)),
        ({"spanId": SPAN}, ("span_id",), (None, None)),  # a span of no trace names nothing
        ("00-" + TRACE + "-" + SPAN + "-01", ("trace_id",), (None, None)),
        ([TRACE], ("trace_id",), (None, None)),
    ],
)
def test_an_invalid_id_is_dropped_and_counted_never_refused(
    context: Any, dropped: tuple[str, ...], kept: tuple[str | None, str | None]
) -> None:
    [inv] = decode(envelope(spanContext=context))
    assert (inv.trace_id, inv.span_id) == kept
    assert inv.sanitized == dropped
    assert set(dropped) <= set(FIELDS), "a label the counter has"
    assert inv.logs[0].text == "hi", "the rest of the invocation is stored as it was"


def test_a_null_span_context_is_absent() -> None:
    [inv] = decode(envelope(spanContext=None))
    assert (inv.trace_id, inv.span_id, inv.sanitized) == (None, None, ())


def test_existing_formats_carry_no_ids() -> None:
    paths = [p for p in sorted(FIXTURES.rglob("*")) if p.is_file()]
    assert len(paths) > 20
    for path in paths:
        for inv in _decoded(path):
            assert (inv.trace_id, inv.span_id) == (None, None), path


def _decoded(path: Path) -> list[Any]:
    try:
        return decode(path.read_bytes())
    except Exception:  # a fixture of a bad message: nothing to check
        return []
