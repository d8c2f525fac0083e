"""Streaming tail events decoded: the real runtime's (tests/fixtures/tail_stream), what B7 of the
reference says the current workerd really sends, and the older shapes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.formats.decode import decoded
from pipeline.formats.tail_stream import StreamEvent

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tail_stream" / "workerd-2026-11-23.jsonl"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def message(*events: dict[str, Any], script: str | None = "shop") -> bytes:
    body = {"tailStream": list(events), "script": script}
    return json.dumps(body, ensure_ascii=True).encode()


def envelope(body: dict[str, Any], seq: int = 1, **over: Any) -> dict[str, Any]:
    context = {"traceId": TRACE, "spanId": "b7ad6b7169203331"}
    return {"invocationId": "abc123", "spanContext": context, "sequence": seq,
            "timestamp": "2026-12-05T10:20:36.440Z", "event": body, **over}  # fmt: skip


def one(event: dict[str, Any], **over: Any) -> StreamEvent:
    found = decoded(message(envelope(event, **over))).stream
    assert len(found) == 1
    return found[0]


def test_the_real_runtimes_events_all_decode() -> None:
    raw = FIXTURE.read_text().splitlines()
    body = ('{"tailStream":[' + ",".join(raw) + '],"script":"producer"}').encode()
    found = decoded(body)
    assert found.invocations == []
    assert len(found.stream) == len(raw)
    kinds = Counter(e.type for e in found.stream)
    assert kinds["other"] == 0
    assert kinds["onset"] == kinds["outcome"] == 20
    onsets = [e.onset for e in found.stream if e.onset is not None]
    assert Counter(o.event_type for o in onsets) == {"fetch": 19, "alarm": 1}
    # No script in any onset: the forwarder's name is used.
    assert {o.script for o in onsets} == {"producer"}
    # The span an onset opens is its own, not the trace id.
    assert all(o.span_id is not None and len(o.span_id) == 16 for o in onsets)
    # A lone surrogate from /unicode, repaired and counted.
    assert any(e.sanitized == ("message",) for e in found.stream)


def test_a_fetch_onset_headers_become_an_object_for_redaction() -> None:
    ev = one({"type": "onset", "executionModel": "stateless", "spanId": "00f067aa0ba902b7",
              "scriptName": "shop-api", "scriptVersion": {"id": "v-1"}, "scriptTags": ["t"],
              "info": {"type": "fetch", "method": "POST", "url": "https://x.test/a?token=1",
                       "cfJson": {"colo": "AMS"},
                       "headers": [{"name": "Authorization", "value": "Bearer s3cr3t"},
                                   {"name": "accept", "value": "a"},
                                   {"name": "accept", "value": "b"}]}})  # fmt: skip
    assert ev.onset is not None
    inv = ev.onset
    assert (inv.event_type, inv.method, inv.url) == ("fetch", "POST", "https://x.test/a?token=1")
    assert (inv.script, inv.script_version, inv.script_tags) == ("shop-api", "v-1", ("t",))
    assert inv.extra["headers"] == {"authorization": "Bearer s3cr3t", "accept": "a, b"}
    assert inv.extra["cf"] == {"colo": "AMS"}
    assert (inv.trace_id, inv.span_id) == (TRACE, "00f067aa0ba902b7")
    assert ev.script == "shop-api"  # the onset's name wins over the forwarder's


@pytest.mark.parametrize(
    ("info", "event_type"),
    [({"type": "jsrpc"}, "rpc"), ({"type": "scheduled", "cron": "* * * * *"}, "scheduled"),
     ({"type": "alarm"}, "alarm"), ({"type": "queue", "queueName": "q"}, "queue"),
     ({"type": "email"}, "email"), ({"type": "trace", "traces": []}, "tail"),
     ({"type": "hibernatableWebSocket", "info": {"type": "close"}}, "websocket"),
     ({"type": "custom"}, "connect"), ({"type": "resume"}, "unknown"), (None, "unknown")],
)  # fmt: skip
def test_every_trigger_has_its_event_type(info: dict[str, Any] | None, event_type: str) -> None:
    ev = one({"type": "onset", "spanId": "00f067aa0ba902b7", "info": info})
    assert ev.onset is not None
    assert ev.onset.event_type == event_type


def test_log_lines_exceptions_and_marks() -> None:
    log = one({"type": "log", "level": "warn", "message": ["slow", {"ms": 9}],
               "errorInfo": [None, None]})  # fmt: skip
    assert log.line is not None
    assert (log.line.level, log.line.text, log.line.data) == ("warn", 'slow {"ms":9}', {"ms": 9})
    cut = one({"type": "log", "level": "log", "message": '["' + "x" * 50, "truncated": True})
    assert cut.truncated
    assert cut.line is not None
    assert cut.line.text.startswith('["xxx')
    assert cut.line.data == {"truncated": True}
    exc = one({"type": "exception", "name": "Error", "message": "boom",
               "stack": "    at f (a.js:1:1)"})  # fmt: skip
    assert exc.error is not None
    assert (exc.error.name, exc.error.message) == ("Error", "boom")
    channel = one({"type": "diagnosticChannel", "channel": "c1", "message": {"a": 1}})
    assert channel.line is not None
    assert channel.line.kind == "diagnostic_channel"
    done = one({"type": "outcome", "outcome": "exceededCpu", "cpuTime": 10.6, "wallTime": 20})
    assert (done.outcome, done.cpu_ms, done.wall_ms) == ("exceededCpu", 11, 20)
    ret = one({"type": "return", "info": {"type": "fetch", "statusCode": 204}})
    assert ret.status == 204
    assert one({"type": "return"}).status is None
    lost = one({"type": "streamDiagnostic",
                "diagnostic": {"diagnosticsType": "droppedEvents", "count": 12}})  # fmt: skip
    assert lost.dropped == 12
    pairs = [{"name": "jsrpc.method", "value": "get"}, {"name": "big", "value": "9007199254740993"}]
    attrs = one({"type": "attributes", "info": pairs})
    assert attrs.attributes == {"jsrpc.method": "get", "big": "9007199254740993"}


def test_spans_and_the_older_shapes() -> None:
    opened = one({"type": "spanOpen", "name": "fetch", "spanId": "1111111111111111"})
    assert (opened.name, opened.opened, opened.span_id) == (
        "fetch", "1111111111111111", "b7ad6b7169203331",
    )  # fmt: skip
    old = one({"type": "spanOpen", "op": "kv_get", "spanId": "2222222222222222"})
    assert old.name == "kv_get"
    closed = one({"type": "spanClose", "outcome": "ok"})
    assert (closed.type, closed.outcome, closed.span_id) == ("spanClose", "ok", "b7ad6b7169203331")
    older = decoded(message({"invocationId": "i", "traceId": TRACE, "timestamp": 1_764_930_036_440,
                             "sequence": 0, "event": {"type": "hibernate"}})).stream  # fmt: skip
    assert [(e.type, e.trace_id) for e in older] == [("other", TRACE)]
    link = one({"type": "link", "label": "x", "traceId": TRACE})
    assert link.type == "other"
    mark = one({"type": "attribute", "info": [{"name": "a", "value": 1}]})
    assert mark.attributes == {"a": 1}


def test_a_bare_envelope_decodes_too() -> None:
    bare = envelope({"type": "log", "level": "log", "message": ["x"]})
    found = decoded(json.dumps(bare).encode())
    assert [e.type for e in found.stream] == ["log"]
    assert found.stream[0].script is None


def test_u0000_is_repaired_and_counted() -> None:
    ev = one({"type": "log", "level": "log", "message": ["a\u0000b"]})
    assert ev.line is not None
    assert ev.line.text == "a\ufffdb"
    assert ev.sanitized == ("message",)


@pytest.mark.parametrize(
    ("over", "field"),
    [({"invocationId": ""}, "tailStream[0].invocationId"),
     ({"invocationId": "x" * 129}, "tailStream[0].invocationId"),
     ({"sequence": -1}, "tailStream[0].sequence"),
     ({"sequence": "1"}, "tailStream[0].sequence"),
     ({"timestamp": "yesterday"}, "tailStream[0].timestamp"),
     ({"timestamp": "2026-12-05T10:20:36"}, "tailStream[0].timestamp"),
     ({"event": None}, "tailStream[0].event"),
     ({"event": {"level": "log"}}, "tailStream[0].event.type")],
)  # fmt: skip
def test_a_bad_envelope_names_its_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decoded(message(envelope({"type": "log", "level": "log", "message": []}, **over)))
    assert caught.value.field == field


def test_a_bad_script_or_stream_is_refused() -> None:
    with pytest.raises(DecodeError) as caught:
        decoded(json.dumps({"tailStream": {}, "script": "s"}).encode())
    assert caught.value.field == "tailStream"
    with pytest.raises(DecodeError) as caught:
        decoded(json.dumps({"tailStream": [], "script": 5}).encode())
    assert caught.value.field == "script"
