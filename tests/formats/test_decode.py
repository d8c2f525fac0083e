"""The decoder: every accepted format, every event variant, the same content decoding to the same
invocation whatever the format, and errors that name the field. Fixtures: tests/fixtures/events/,
built from the shapes in /work/shared/docs/cloudflare-tail-events.md."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.errors import DECODE_REASONS, DecodeError
from pipeline.formats import jsonstream
from pipeline.formats.decode import decode
from pipeline.formats.invocation import EVENT_TYPES, ExceptionInfo, Invocation, LogLine
from pipeline.kafka import synth

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"
T0 = 1_767_225_600_123


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def one(value: bytes | dict[str, Any] | list[Any]) -> Invocation:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    [invocation] = decode(raw)
    return invocation


def item(**fields: Any) -> dict[str, Any]:
    """A minimal trace item with `fields` on top."""
    return {"scriptName": "w", "outcome": "ok", "eventTimestamp": T0, "logs": [], **fields}


def error_of(value: bytes | dict[str, Any] | list[Any]) -> DecodeError:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    with pytest.raises(DecodeError) as caught:
        decode(raw)
    return caught.value


# --- every format and variant ---------------------------------------------------------------------

VARIANTS = [
    # fixture, [(event_type, outcome, truncated, source), ...]
    ("trace/fetch.json", [("fetch", "ok", False, "trace")]),
    ("trace/scheduled.json", [("scheduled", "ok", False, "trace")]),
    ("trace/alarm.json", [("alarm", "ok", False, "trace")]),
    ("trace/queue.json", [("queue", "ok", False, "trace")]),
    ("trace/email.json", [("email", "ok", False, "trace")]),
    ("trace/rpc.json", [("rpc", "ok", False, "trace")]),
    ("trace/tail.json", [("tail", "ok", False, "trace")]),
    ("trace/websocket.json", [("websocket", "exception", False, "trace")]),
    ("trace/connect.json", [("connect", "ok", False, "trace")]),
    ("trace/null_event.json", [("unknown", "canceled", False, "trace")]),
    ("trace/truncated.json", [("fetch", "ok", True, "trace")]),
    ("trace/legacy_2023.json", [("fetch", "exception", False, "trace")]),
    ("batch.json", [("fetch", "ok", False, "trace")] * 2 + [("queue", "ok", False, "trace")]),
    (
        "wrangler_tail.out",
        [
            ("overload", "ok", False, "trace"),
            ("fetch", "ok", False, "trace"),
            ("alarm", "ok", False, "trace"),
            ("overload", "ok", False, "trace"),
        ],
    ),
    ("logpush/fetch.json", [("fetch", "ok", False, "logpush")]),
    (
        "logpush/batch.ndjson",
        [
            ("fetch", "ok", False, "logpush"),
            ("rpc", "ok", False, "logpush"),
            ("websocket", "exception", False, "logpush"),
            ("scheduled", "ok", False, "logpush"),
            ("fetch", "ok", True, "logpush"),
        ],
    ),
    ("envelope/request.json", [("fetch", "ok", False, "envelope")]),
    ("envelope/job.json", [("job", "exception", False, "envelope")]),
    ("envelope/log.json", [("log", "ok", False, "envelope")]),
]


@pytest.mark.parametrize(("name", "expected"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_fixture_decodes(name: str, expected: list[tuple[str, str, bool, str]]) -> None:
    got = decode(fixture(name))
    assert [(i.event_type, i.outcome, i.truncated, i.source) for i in got] == expected
    for invocation in got:
        assert invocation.event_type in EVENT_TYPES
        orjson.dumps(invocation.extra)  # storable as it is


def test_fetch_trace_item_maps_every_field() -> None:
    raw = json.loads(fixture("trace/fetch.json"))
    usage = {"event": "llm_usage", "model": "claude-sonnet-4-5"}
    usage["usage"] = {"input_tokens": 1834, "output_tokens": 412}  # type: ignore[assignment]
    assert one(fixture("trace/fetch.json")) == Invocation(
        script="api-gateway",
        event_type="fetch",
        timestamp_ms=T0,
        outcome="ok",
        method="POST",
        url="https://api.example.com/v1/chat?stream=false",
        status=200,
        cpu_ms=3,
        wall_ms=148,
        logs=(
            LogLine(
                T0 + 2,
                "info",
                'routing {"path":"/v1/chat","model":"claude-sonnet-4-5"}',
                {"path": "/v1/chat", "model": "claude-sonnet-4-5"},
            ),
            LogLine(T0 + 147, "log", raw["logs"][1]["message"][0], usage),
            LogLine(T0 + 147, "warn", "github ratelimit remaining=112 limit=5000 112 null true"),
        ),
        exceptions=(),
        truncated=False,
        script_version="6e3d1a2f-4b7c-4d8e-9f10-2a3b4c5d6e7f",
        entrypoint="default",
        dispatch_namespace=None,
        script_tags=("team:platform", "env:production"),
        extra={
            "headers": raw["event"]["request"]["headers"],
            "cf": raw["event"]["request"]["cf"],
            "executionModel": "stateless",
            "scriptVersion": raw["scriptVersion"],
        },
    )


def test_event_details_and_optional_fields_go_to_extra() -> None:
    scheduled = one(fixture("trace/scheduled.json"))
    assert scheduled.extra == {
        "cron": "*/5 * * * *",
        "scheduledTime": 1767225600000,
        "executionModel": "stateless",
    }
    alarm = one(fixture("trace/alarm.json"))
    assert alarm.extra["scheduledTime"] == "2026-01-01T00:00:00.000Z"
    assert alarm.extra["executionModel"] == "durableObject"
    assert alarm.extra["durableObjectId"].startswith("a1b2")
    assert alarm.entrypoint == "RateLimiter"
    assert one(fixture("trace/queue.json")).extra["batchSize"] == 25
    assert one(fixture("trace/email.json")).extra["rawSize"] == 45416
    assert one(fixture("trace/rpc.json")).extra["rpcMethod"] == "verifySession"
    tail = one(fixture("trace/tail.json"))
    assert tail.extra["consumedEvents"] == [
        {"scriptName": "api-gateway"},
        {"scriptName": "auth-edge"},
    ]
    socket = one(fixture("trace/websocket.json"))
    assert socket.extra["getWebSocketEvent"]["code"] == 1006
    assert socket.exceptions == (
        ExceptionInfo(
            T0 + 2,
            "Error",
            "socket closed abnormally",
            "    at ChatRoom.webSocketClose (worker.js:211:13)",
        ),
    )
    canceled = one(fixture("trace/null_event.json"))
    assert canceled.extra["tailAttributes"] == {"region": "eu", "sampled": True, "shard": 3}
    legacy = one(fixture("trace/legacy_2023.json"))
    assert (legacy.cpu_ms, legacy.wall_ms, legacy.truncated) == (None, None, False)
    assert legacy.extra["id"] == "0b3c9f0e-1a52-4c0e-8f7d-31f4d2d0f3a1"


def test_unknown_keys_are_kept_and_unknown_event_shapes_too() -> None:
    got = one(item(event={"somethingNew": {"a": 1}}, futureField=[1, 2], preview={"id": "p"}))
    assert got.event_type == "unknown"
    assert got.extra == {"somethingNew": {"a": 1}, "futureField": [1, 2], "preview": {"id": "p"}}
    # An event key that collides with a top-level key keeps both.
    clash = one(item(event={"queue": "jobs", "batchSize": 1}, queue="top"))
    assert clash.extra == {"queue": "top", "event.queue": "jobs", "batchSize": 1}


def test_variant_is_told_by_keys_not_their_order() -> None:
    cron_last = one(item(event={"scheduledTime": 1767225600000, "cron": "0 * * * *"}))
    assert cron_last.event_type == "scheduled"
    assert one(item(event={"rpcMethod": ""})).event_type == "rpc"
    assert one(item(event={"batchSize": 3, "queue": "q"})).event_type == "queue"


def test_wrangler_overload_notices() -> None:
    notices = [i for i in decode(fixture("wrangler_tail.out")) if i.event_type == "overload"]
    assert [n.extra["type"] for n in notices] == ["overload", "overload-stop"]
    assert notices[0].extra["message"].startswith("Tail is currently in sampling mode")
    bare = one({"event": {"type": "overload", "message": "sampling"}})
    assert (bare.event_type, bare.outcome, bare.script) == ("overload", "unknown", None)


def test_worker_for_platforms_batch_keeps_namespace() -> None:
    dispatcher, user, _ = decode(fixture("batch.json"))
    assert (dispatcher.script, dispatcher.dispatch_namespace) == ("dispatcher", None)
    assert (user.script, user.dispatch_namespace, user.script_tags) == (
        "shop-1234",
        "customers",
        ("plan:pro",),
    )


# --- the same invocation in every format ----------------------------------------------------------

ALL_FIELDS = tuple(f.name for f in dataclasses.fields(Invocation) if f.compare)
# Logpush has no request headers, cf, executionModel or diagnostics channel: its `extra` holds
# RayID and its own ScriptVersion object instead. Every other field is carried, so the test
# compares all fields but `extra` for Logpush.
LOGPUSH_FIELDS = tuple(name for name in ALL_FIELDS if name != "extra")

EQUIVALENT = [
    # fixture, index of the invocation in it, fields the format carries, source
    ("equivalent/trace.json", 0, ALL_FIELDS, "trace"),
    ("equivalent/array.json", 0, ALL_FIELDS, "trace"),
    ("equivalent/ndjson.ndjson", 0, ALL_FIELDS, "trace"),
    ("equivalent/wrangler.out", 1, ALL_FIELDS, "trace"),
    ("equivalent/envelope.json", 0, ALL_FIELDS, "envelope"),
    ("equivalent/logpush.json", 0, LOGPUSH_FIELDS, "logpush"),
]


@pytest.mark.parametrize(
    ("name", "index", "carried", "source"), EQUIVALENT, ids=[e[0] for e in EQUIVALENT]
)
def test_every_format_decodes_to_the_same_invocation(
    name: str, index: int, carried: tuple[str, ...], source: str
) -> None:
    reference = one(fixture("equivalent/trace.json"))
    got = decode(fixture(name))[index]
    assert got.source == source
    if carried == ALL_FIELDS:
        assert got == reference  # equality ignores `source`
    else:
        assert dataclasses.replace(got, extra={}) == dataclasses.replace(reference, extra={})
    # Guard against a vacuous comparison: the reference really has content in each field.
    assert reference.logs
    assert reference.exceptions
    assert reference.status == 500


def test_logpush_extra_keeps_what_trace_items_do_not_have() -> None:
    got = one(fixture("equivalent/logpush.json"))
    assert got.extra["RayID"] == "8f2a1b3c4d5e6f72"
    assert got.extra["ScriptVersion"]["Tag"] == "v43"


# --- outcomes -------------------------------------------------------------------------------------

OUTCOMES = (
    "unknown",
    "ok",
    "exception",
    "exceededCpu",
    "killSwitch",
    "daemonDown",
    "scriptNotFound",
    "canceled",
    "exceededMemory",
    "loadShed",
    "responseStreamDisconnected",
    "internalError",
    "exceededWallTime",
    "aborted",
    "somethingTheRuntimeAddsNextYear",
)


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_outcomes_are_kept_as_given(outcome: str) -> None:
    assert one(item(outcome=outcome)).outcome == outcome
    assert one({"Outcome": outcome, "ScriptName": "w"}).outcome == outcome


def test_exception_outcome_without_exceptions_and_the_reverse() -> None:
    assert one(item(outcome="exception", exceptions=[])).exceptions == ()
    ok = one(item(exceptions=[{"timestamp": T0, "name": "Error", "message": "handled"}]))
    assert (ok.outcome, len(ok.exceptions)) == ("ok", 1)


# --- log rendering and double-encoded JSON --------------------------------------------------------


def log_of(*message: Any, level: str = "log") -> LogLine:
    [line] = one(item(logs=[{"timestamp": T0, "level": level, "message": list(message)}])).logs
    return line


def test_text_renders_like_console() -> None:
    line = log_of("status", 200, 1.5, None, True, [1, "a"], {"k": {"n": 1}})
    assert line.text == 'status 200 1.5 null true [1,"a"] {"k":{"n":1}}'
    assert line.data == {"k": {"n": 1}}
    assert log_of().text == ""
    assert log_of("Error: boom").text == "Error: boom"


def test_message_that_is_not_an_array_is_one_argument() -> None:
    entries = [
        {"timestamp": T0, "level": "log", "message": "plain"},
        {"timestamp": T0, "level": "log", "message": {"a": 1}},
        {"timestamp": T0, "level": "log"},
    ]
    lines = one(item(logs=entries)).logs
    assert [(x.text, x.data) for x in lines] == [("plain", None), ('{"a":1}', {"a": 1}), ("", None)]


def test_double_encoded_json_object_becomes_data() -> None:
    payload = '{"event":"llm_usage","usage":{"input_tokens":10}}'
    line = log_of(payload)
    assert line.text == payload
    assert line.data == {"event": "llm_usage", "usage": {"input_tokens": 10}}
    assert log_of(" " + payload + "\n").data == line.data  # padded
    assert log_of("[1, 2]").data is None  # an array is not an object
    assert log_of('"just a string"').data is None
    assert log_of("{not json}").data is None
    assert log_of("{}").data is None
    assert log_of({}).data is None  # what the runtime records when serialisation failed


def test_several_objects_merge_left_to_right() -> None:
    line = log_of("req", {"a": 1, "b": 1}, '{"b": 2, "c": 2}', {"c": 3})
    assert line.data == {"a": 1, "b": 2, "c": 3}
    assert line.text == 'req {"a":1,"b":1} {"b": 2, "c": 2} {"c":3}'


def test_error_info_is_kept_when_an_argument_is_an_error() -> None:
    info = [None, {"name": "Error", "message": "boom", "stack": "Error: boom\n    at f (w.js:1:1)"}]
    entry = {"timestamp": T0, "level": "error", "message": ["failed", "Error: boom"]}
    [line] = one(item(logs=[{**entry, "errorInfo": info}])).logs
    assert line.data == {"errorInfo": info}
    [plain] = one(item(logs=[{**entry, "errorInfo": [None, None]}])).logs
    assert plain.data is None


def test_levels() -> None:
    for level in ("debug", "info", "log", "warn", "error"):
        assert log_of("x", level=level).level == level
    assert log_of("x", level="WARN").level == "warn"
    assert log_of("x", level="warning").level == "warn"


# --- truncation -----------------------------------------------------------------------------------


def test_truncated_item_is_kept_and_flagged() -> None:
    got = one(fixture("trace/truncated.json"))
    assert got.truncated
    assert (got.method, got.url) == ("POST", None)  # an oversized request keeps its method only
    assert got.exceptions[-1].message.startswith("Trace resource limit exceeded")


@pytest.mark.parametrize(
    "fields",
    [
        {"truncated": True},
        {"logs": [{"timestamp": T0, "level": "warn", "message": ["Log size limit exceeded: x"]}]},
        {
            "exceptions": [
                {
                    "timestamp": T0,
                    "name": "Error",
                    "message": "Trace resource limit exceeded; subsequent exceptions not recorded.",
                }
            ]
        },
        {"diagnosticsChannelEvents": [{"timestamp": T0, "channel": "workerd.LimitExceeded"}]},
    ],
    ids=["flag", "log-marker", "exception-marker", "diagnostics-marker"],
)
def test_each_runtime_marker_sets_truncated(fields: dict[str, Any]) -> None:
    assert one(item(**fields)).truncated


def test_a_marker_text_at_another_level_is_just_a_log() -> None:
    logs = [{"timestamp": T0, "level": "log", "message": ["Log size limit exceeded: quoted"]}]
    assert not one(item(logs=logs)).truncated


@pytest.mark.parametrize(
    "fields",
    [
        {"Logs": [{"Level": "log", "Message": ["a"]}, "<<<Logpush: messages truncated>>>"]},
        {"Logs": [{"Level": "log", "Message": ["cut here<<<Logpush: messages truncated>>>"]}]},
        {"Logs": "<<<Logpush: messages truncated>>>"},
        {"Exceptions": [{"Name": "Error", "Message": "x<<<Logpush: messages truncated>>>"}]},
        {"Truncated": True},
    ],
)
def test_logpush_truncation_markers(fields: dict[str, Any]) -> None:
    got = one({"ScriptName": "w", "Outcome": "ok", **fields})
    assert got.truncated
    assert all(line.text != "<<<Logpush: messages truncated>>>" for line in got.logs)


# --- strings as numbers, ranges -------------------------------------------------------------------


def test_numbers_given_as_strings_are_accepted() -> None:
    got = one(
        item(
            eventTimestamp=str(T0),
            cpuTime="3",
            wallTime="12",
            event={
                "request": {"url": "https://a.example/", "method": "GET"},
                "response": {"status": "200"},
            },
            logs=[{"timestamp": str(T0), "level": "log", "message": ["x"]}],
        )
    )
    assert (got.timestamp_ms, got.cpu_ms, got.wall_ms, got.status) == (T0, 3, 12, 200)
    assert got.logs[0].timestamp_ms == T0
    lp = one({"Outcome": "ok", "CPUTimeMs": "4", "WallTimeMs": "9", "EventTimestampMs": str(T0)})
    assert (lp.cpu_ms, lp.wall_ms, lp.timestamp_ms) == (4, 9, T0)


def test_fractional_milliseconds_are_truncated() -> None:
    got = one(item(eventTimestamp=T0 + 0.9, wallTime=12.7))
    assert (got.timestamp_ms, got.wall_ms) == (T0, 12)


def test_missing_optional_fields_are_fine() -> None:
    got = one({"outcome": "ok"})
    assert (got.script, got.event_type, got.timestamp_ms, got.logs, got.extra) == (
        None,
        "unknown",
        None,
        (),
        {},
    )
    assert one({"ScriptName": "w"}).outcome == "unknown"  # a Logpush job may not select it
    assert one(item(scriptName=None, eventTimestamp=None)).script is None


def test_empty_strings_mean_absent() -> None:
    got = one(
        {
            "ScriptName": "",
            "Outcome": "",
            "EventType": "",
            "Entrypoint": "",
            "DispatchNamespace": "",
            "ScriptVersion": {"ID": "", "Message": "", "Tag": ""},
            "Event": "",
        }
    )
    assert (got.script, got.outcome, got.event_type, got.entrypoint, got.script_version) == (
        None,
        "unknown",
        "unknown",
        None,
        None,
    )


def test_logpush_event_types_and_case_insensitive_keys() -> None:
    pairs = {
        "fetch": "fetch",
        "scheduled": "scheduled",
        "alarm": "alarm",
        "queue": "queue",
        "email": "email",
        "worker_rpc": "rpc",
        "hibernatable_web_socket": "websocket",
        "brand_new": "unknown",
    }
    for given, wanted in pairs.items():
        assert one({"Outcome": "ok", "EventType": given}).event_type == wanted
    assert one({"Outcome": "ok", "EventType": "brand_new"}).extra == {"EventType": "brand_new"}
    got = one(
        {
            "Outcome": "ok",
            "Event": {"request": {"url": "https://a.example/", "METHOD": "GET"}},
            "Exceptions": [{"name": "E", "MESSAGE": "m", "timestampMs": T0}],
        }
    )
    assert (got.event_type, got.method, got.url) == ("fetch", "GET", "https://a.example/")
    assert got.exceptions == (ExceptionInfo(T0, "E", "m"),)


# --- exceptions as workerd reports them -------------------------------------------------------

CUSTOM_STACK = "CustomError: quota exceeded for 42\n    at check (worker.js:10:11)\n    at fetch"


def test_a_subclass_named_only_in_the_stack_header_is_kept() -> None:
    """workerd reports `name: "Error"` for `class CustomError extends Error`; the stack's
    header line names the class. The header is dropped: stacks hold frames only."""
    thrown = {"timestamp": T0, "name": "Error", "message": "quota exceeded for 42"}
    got = one(item(exceptions=[{**thrown, "stack": CUSTOM_STACK}]))
    [exc] = got.exceptions
    assert (exc.name, exc.reported_name, exc.group_name) == ("CustomError", "Error", "Error")
    assert exc.stack == "    at check (worker.js:10:11)\n    at fetch"
    # Logpush's exceptions go through the same reading.
    logpush = one({"Outcome": "exception", "Exceptions": [
        {"Name": "Error", "Message": "quota exceeded for 42", "Stack": CUSTOM_STACK}]})  # fmt: skip
    assert logpush.exceptions[0].name == "CustomError"


@pytest.mark.parametrize(
    ("name", "message", "stack", "want"),
    [
        # The header names the runtime's own class: dropped, nothing else changes.
        ("TypeError", "x is undefined", "TypeError: x is undefined\n    at f (a.js:1:1)",
         ("TypeError", None, "    at f (a.js:1:1)")),
        # Frames only, as streaming tail and most exceptions have them.
        ("Error", "boom", "    at f (a.js:1:1)", ("Error", None, "    at f (a.js:1:1)")),
        # An empty message: the header is the name alone.
        ("Error", "", "Oops\n    at f (a.js:1:1)", ("Oops", "Error", "    at f (a.js:1:1)")),
        # A message over several lines.
        ("Error", "a\nb", "Bad: a\nb\n    at f (a.js:1)", ("Bad", "Error", "    at f (a.js:1)")),
        # No frames at all.
        ("Error", "boom", "CustomError: boom", ("CustomError", "Error", None)),
        # Not a header of this error: the stack is kept as it came.
        ("Error", "boom", "Warning: other\n    at f", ("Error", None, "Warning: other\n    at f")),
        ("Error", "boom", "no class: boom\n    at f", ("Error", None, "no class: boom\n    at f")),
    ],
)  # fmt: skip
def test_stack_headers(name: str, message: str, stack: str, want: tuple[Any, ...]) -> None:
    [exc] = one(item(exceptions=[{"timestamp": T0, "name": name, "message": message,
                                  "stack": stack}])).exceptions  # fmt: skip
    assert (exc.name, exc.reported_name, exc.stack) == want


# --- wrangler dev -----------------------------------------------------------------------------

WRAP = "\x1b[34m[producer]\x1b[39m"


def test_wrangler_devs_name_prefix_names_the_unnamed_script() -> None:
    """`wrangler dev` with several Workers prepends `[producer]` (coloured on a terminal) to
    every log, info and debug call, and the runtime names no script: the prefix was stored at
    the start of every line's text, with its colour codes, under `(unnamed)`."""
    logs = [
        {"level": "log", "message": [WRAP, "plain line"], "timestamp": T0},
        {"level": "warn", "message": ["not wrapped"], "timestamp": T0},
        {"level": "info", "message": [WRAP, '{"event": "x"}'], "timestamp": T0},
        {"level": "debug", "message": ["[producer]", "plain prefix"], "timestamp": T0},
    ]
    got = one(item(scriptName=None, logs=logs))
    assert got.script == "producer"
    assert [line.text for line in got.logs] == [
        "plain line",
        "not wrapped",
        '{"event": "x"}',
        "plain prefix",
    ]
    assert got.logs[2].data == {"event": "x"}


@pytest.mark.parametrize(
    ("script", "texts"),
    [
        ("named", [[WRAP, "a"], [WRAP, "b"]]),  # a named script is never renamed
        (None, [[WRAP, "a"], ["b"]]),  # a log line without it: not wrangler's
        (None, [[WRAP, "a"], ["[other]", "b"]]),  # two names
        (None, [["[not a name]", "a"]]),
    ],
)
def test_a_prefix_that_is_not_wranglers_is_kept(script: str | None, texts: list[Any]) -> None:
    logs = [{"level": "log", "message": m, "timestamp": T0} for m in texts]
    got = one(item(scriptName=script, logs=logs))
    assert got.script == script
    assert [line.text for line in got.logs] == [" ".join(m) for m in texts]


# --- text PostgreSQL cannot hold --------------------------------------------------------------


def test_nul_becomes_the_replacement_character_in_every_column() -> None:
    """U+0000 used to cost the whole invocation (PostgreSQL refuses it in text and jsonb)."""
    got = one(
        item(
            scriptName="a\x00b",
            outcome="ok\x00",
            event={"request": {"url": "https://x.test/\x00", "method": "G\x00T"}},
            logs=[
                {"level": "log", "message": ["x\x00y", {"k\x00": ["v\x00"]}], "timestamp": T0},
                {"level": "log", "message": ["clean"], "timestamp": T0},
            ],
            exceptions=[{"name": "E\x00", "message": "m\x00", "stack": "at \x00", "timestamp": T0}],
            scriptVersion={"id": "v\x00"},
            entrypoint="e\x00",
            dispatchNamespace="n\x00",
            scriptTags=["t\x00"],
            tailAttributes={"a": "b\x00"},
        )
    )
    f = "\ufffd"
    assert (got.script, got.outcome) == (f"a{f}b", f"ok{f}")
    assert (got.url, got.method) == (f"https://x.test/{f}", f"G{f}T")
    assert got.logs[0].text == f'x{f}y {{"k\\u0000":["v\\u0000"]}}'  # rendered JSON: an escape
    assert got.logs[0].data == {f"k{f}": [f"v{f}"]}
    assert got.logs[1].text == "clean"
    assert got.exceptions == (ExceptionInfo(T0, f"E{f}", f"m{f}", f"at {f}"),)
    assert (got.script_version, got.entrypoint, got.dispatch_namespace, got.script_tags) == (
        f"v{f}",
        f"e{f}",
        f"n{f}",
        (f"t{f}",),
    )
    assert got.extra["tailAttributes"] == {"a": f"b{f}"}
    assert got.extra["scriptVersion"] == {"id": f"v{f}"}
    assert sorted(got.sanitized) == sorted(
        ["script", "outcome", "url", "method", "message", "data", "exception_name", "message",
         "stack", "script_version", "entrypoint", "dispatch_namespace", "script_tags", "extra"]
    )  # fmt: skip
    assert "\x00" not in orjson.dumps(dataclasses.asdict(got)).decode().replace("\\u0000", "")


def test_a_lone_surrogate_is_repaired_not_refused() -> None:
    """`JSON.stringify` writes a string cut inside an emoji as `\\ud83d`; orjson refuses that,
    and the whole message was dead-lettered. Pairs stay as they are."""
    value = (
        b'{"scriptName":"w","outcome":"ok","logs":[{"level":"log","timestamp":%d,'
        b'"message":["cut \\ud83d","pair \\ud83d\\ude00","low \\udc00"]}]}' % T0
    )
    got = one(value)
    assert got.logs[0].text == "cut \ufffd pair \U0001f600 low \ufffd"
    assert got.sanitized == ("message",)
    # The same in an array, in concatenated values and in NDJSON.
    assert decode(b"[" + value + b"," + value + b"]") == [got, got]
    assert decode(value + b"\n" + value) == [got, got]


def test_clean_messages_are_returned_untouched() -> None:
    """The walk runs only for a message whose text can hold a NUL (`\\u0000`) or that needed
    the lenient parse: every other invocation is the decoder's own object."""
    got = one(item(logs=[{"level": "log", "message": ["a \\u0000 in the text"], "timestamp": T0}]))
    assert got.logs[0].text == "a \\u0000 in the text"
    assert got.sanitized == ()


def test_a_script_name_too_long_for_an_index_key_is_refused() -> None:
    with pytest.raises(DecodeError) as error:
        one(item(scriptName="w" * 1025))
    assert error.value.field == "scriptName"
    assert "1025 bytes long; at most 1024 fit an index key" in error.value.problem
    assert one(item(scriptName="w" * 1024)).script == "w" * 1024
    assert one(item(scriptName="é" * 512)).script == "é" * 512  # 1024 bytes
    with pytest.raises(DecodeError, match="1026 bytes"):
        one(item(scriptName="é" * 513))
    with pytest.raises(DecodeError) as error:
        one(item(outcome="x" * 2000))
    assert error.value.field == "outcome"
    with pytest.raises(DecodeError) as error:
        one({"ScriptName": "x" * 3000, "Outcome": "ok"})
    assert error.value.field == "ScriptName"


# --- the tailpipe envelope ------------------------------------------------------------------------


def test_envelope_records_and_context() -> None:
    request = one(fixture("envelope/request.json"))
    api, llm, timer = request.logs
    assert (api.kind, llm.kind, timer.kind) == ("api_call", "api_call", "timer")
    assert api.data == {
        "request_id": "req_7Yq2",
        "user": "u_8812",
        "provider": "github",
        "endpoint": "/repos/{owner}/{repo}",
        "model": None,
        "status": 200,
        "duration_ms": 183,
        "rate_limit_remaining": 4711,
    }
    assert llm.data is not None
    assert llm.data["tokens_out"] == 412
    assert timer.data == {"name": "handler", "duration_ms": 411.6}

    job = one(fixture("envelope/job.json"))
    assert job.extra["job"]["name"] == "nightly-scan"
    [scan] = job.logs
    assert (scan.level, scan.kind) == ("warn", "scan")
    assert scan.data == {
        "run_id": "run_20260101_0300",
        "repo": "acme/infra",
        "files": 3912,
        "status": "failed",
        "duration_ms": 61000,
    }
    assert job.exceptions[0].name == "TimeoutError"

    log = one(fixture("envelope/log.json"))
    assert log.logs[0].data == {"pid": 4121, "version": "1.14.2"}


def envelope(**fields: Any) -> dict[str, Any]:
    return {"envelope": "tailpipe/1", **item(**fields)}


def test_record_fields_are_converted_and_checked() -> None:
    record = {"type": "api_call", "status": "429", "tokens_in": "12", "duration_ms": "30"}
    [line] = one(envelope(logs=[{"level": "info", "message": ["x"], "record": record}])).logs
    assert line.data == {"status": 429, "tokens_in": 12, "duration_ms": 30}
    # Record fields win over context, context over the message's objects.
    entry = {"level": "info", "message": [{"a": 1, "b": 1}], "context": {"b": 2, "c": 2}}
    [line] = one(envelope(logs=[{**entry, "record": {"type": "timer", "c": 3}}])).logs
    assert line.data == {"a": 1, "b": 2, "c": 3}


def test_unknown_record_type_is_kept_unchecked() -> None:
    record = {"type": "cache_hit", "key": "k", "ms": -1}
    [line] = one(envelope(logs=[{"level": "info", "message": ["x"], "record": record}])).logs
    assert (line.kind, line.data) == ("cache_hit", {"key": "k", "ms": -1})


# --- decode errors name the field -----------------------------------------------------------------

ERRORS = [
    (
        item(eventTimestamp="yesterday"),
        "eventTimestamp: expected epoch milliseconds (an integer), got string 'yesterday'",
    ),
    (
        item(logs=[{"level": "log"}, {"level": "info"}, {"level": "fatal", "message": ["x"]}]),
        "logs[2].level: expected one of debug, info, log, warn, error, got string 'fatal'",
    ),
    (
        [item(), {"scriptName": "x"}],
        "[1].outcome: missing (every trace item has one)",
    ),
    (
        item(event={"request": {"url": "u", "method": "GET"}, "response": {"status": 1200}}),
        "event.response.status: 1200 is not an HTTP status (0..999)",
    ),
    (
        item(eventTimestamp=32_503_680_000_000),
        "eventTimestamp: 32503680000000 is not epoch milliseconds in years 2000..2199",
    ),
    (
        item(eventTimestamp=1_700_000_000),
        "eventTimestamp: 1700000000 is not epoch milliseconds in years 2000..2199",
    ),
    (item(wallTime=-5), "wallTime: -5 is negative"),
    (
        item(wallTime="12.5"),
        "wallTime: expected a duration in milliseconds (an integer), got string '12.5'",
    ),
    (
        item(cpuTime=True),
        "cpuTime: expected a duration in milliseconds (an integer), got boolean true",
    ),
    (item(truncated="true"), "truncated: expected a boolean, got string 'true'"),
    (item(scriptName=7), "scriptName: expected a string, got number 7"),
    (item(logs="none"), "logs: expected an array, got string 'none'"),
    (item(logs=[["x"]]), "logs[0]: expected an object, got array"),
    (item(exceptions=[{"name": 1}]), "exceptions[0].name: expected a string, got number 1"),
    (item(event=[]), "event: expected an object or null, got array"),
    (item(event={"request": "GET /"}), "event.request: expected an object, got string 'GET /'"),
    (
        item(event={"request": {"headers": ["a"]}}),
        "event.request.headers: expected an object, got array",
    ),
    (item(scriptTags=["a", 1]), "scriptTags[1]: expected a string, got number 1"),
    (item(scriptVersion={"id": 5}), "scriptVersion.id: expected a string, got number 5"),
    (
        envelope(outcome="ok") | {"envelope": "tailpipe/2"},
        "envelope: expected 'tailpipe/1', got string 'tailpipe/2'",
    ),
    (envelope(event={"job": {}}), "event.job.name: expected a non-empty string, got null"),
    (
        envelope(logs=[{"level": "info", "record": {"type": "api_call", "tokens_in": -3}}]),
        "logs[0].record.tokens_in: -3 is negative",
    ),
    (
        envelope(logs=[{"level": "info", "record": {"type": "scan", "files": "many"}}]),
        "logs[0].record.files: expected a non-negative integer, got string 'many'",
    ),
    (
        envelope(logs=[{"level": "info", "context": "req-1"}]),
        "logs[0].context: expected an object, got string 'req-1'",
    ),
    (
        envelope(logs=[{"level": "info", "record": {"files": 1}}]),
        "logs[0].record.type: expected a non-empty string, got null",
    ),
    (
        {"Outcome": "ok", "Logs": [{"Level": 7}]},
        "Logs[0].Level: expected one of debug, info, log, warn, error, got number 7",
    ),
    (
        {"Outcome": "ok", "Event": {"Response": {"Status": "OK"}}},
        "Event.Response.Status: expected an HTTP status (an integer), got string 'OK'",
    ),
    ({}, "$: not a trace item, Logpush record, tailpipe envelope or OTLP export: no known key"),
    ([item(), 3], "[1]: expected a trace item, Logpush record or envelope, got number 3"),
]


@pytest.mark.parametrize(("value", "message"), ERRORS, ids=[e[1].split(":")[0] for e in ERRORS])
def test_errors_name_the_field(value: dict[str, Any] | list[Any], message: str) -> None:
    error = error_of(value)
    assert str(error) == message
    assert error.field == message.split(": ")[0]


@pytest.mark.parametrize(
    ("raw", "field", "problem_start"),
    [
        (b"", "$", "empty message"),
        (b" \n\t", "$", "empty message"),
        (
            b"null",
            "$",
            "expected a trace item, Logpush record, envelope or an array of them, got null",
        ),
        (b'"ok"', "$", "expected a trace item"),
        (b"12", "$", "expected a trace item"),
        (b'{"scriptName": "api-gateway", "outcome": ', "$", "invalid JSON: unexpected end of data"),
        (b"\xff\xfe\x00garbage\x00", "$", "invalid JSON: str is not valid UTF-8"),
        (b'{"outcome": NaN}', "$", "invalid JSON"),
        (b'{"outcome": "ok", "wallTime": 1e400}', "$", "invalid JSON: number is infinity"),
        # The lenient parse of a lone surrogate refuses what orjson refuses.
        (b'{"outcome": "\\ud800", "wallTime": NaN}', "$", "invalid JSON"),
        (b"[" * 2000 + b'"\\ud800"' + b"]" * 2000, "$", "invalid JSON"),
        (b"[" * 254 + b'"\\ud800"' + b"]" * 254, "[0][0][0]", "nested deeper than 253 levels"),
        (b"[" * 2000 + b"]" * 2000, "$", "invalid JSON"),
        (b"[" * 254 + b"]" * 254, "[0][0][0]", "nested deeper than 253 levels"),
        (b"[" * 253 + b"]" * 253, "[0]", "expected a trace item"),  # deep, but not too deep
        (
            b'{"outcome":"ok"}\n{"outcome":"ok"}\n{"outcome":7}\n',
            "line 3:outcome",
            "expected a string",
        ),
        (b'{"outcome":"ok"}\n{"outcome":\n', "line 2", "invalid JSON: unexpected end of data"),
        (b'{"outcome":"ok"} ]', "line 1", "invalid JSON"),
    ],
)
def test_errors_for_whole_values(raw: bytes, field: str, problem_start: str) -> None:
    error = error_of(raw)
    assert error.field == field
    assert error.problem.startswith(problem_start)


def test_deep_nesting_inside_a_log_names_the_log() -> None:
    deep = b"[" * 260 + b"]" * 260  # orjson cannot even write it: bytes by hand
    error = error_of(b'{"outcome": "ok", "logs": [{"level": "log", "message": %s}]}' % deep)
    assert str(error) == "logs[0].message: nested deeper than 253 levels"


def test_deep_double_encoded_json_stays_text() -> None:
    deep = '{"a":' * 260 + "1" + "}" * 260
    line = log_of(deep)
    assert (line.text, line.data) == (deep, None)


def test_large_integers_outside_typed_fields_are_stored_as_given() -> None:
    raw = b'{"outcome": "ok", "tailAttributes": {"big": 18446744073709551615, "huge": 1%s}}'
    got = one(raw % (b"0" * 30))
    assert got.extra["tailAttributes"]["big"] == 18446744073709551615
    assert got.extra["tailAttributes"]["huge"] == 1e30  # orjson: past 64 bits is a float
    orjson.dumps(got.extra)


# --- several values in one message ----------------------------------------------------------------


def test_empty_array_and_byte_order_mark() -> None:
    assert decode(b"[]") == []
    assert one(b"\xef\xbb\xbf" + orjson.dumps(item(scriptName="bom"))).script == "bom"


def test_concatenated_and_ndjson_messages() -> None:
    a, b = orjson.dumps(item(scriptName="a")), orjson.dumps(item(scriptName="b"))
    for raw in (a + b, a + b"\n" + b + b"\n", a + b"\r\n\r\n" + b, b"[" + a + b"]\n" + b):
        assert [i.script for i in decode(raw)] == ["a", "b"]


def test_synthetic_load_decodes_and_poison_is_refused() -> None:
    for message in synth.messages(seed=7, start_ms=T0, poison_ratio=0.05):
        if message.poison:
            with pytest.raises(DecodeError):
                decode(message.value)
        else:
            assert len(decode(message.value)) == 1
        if message.value is synth.POISON[-1]:
            break
    messages = synth.messages(seed=8, start_ms=T0, poison_ratio=0.0)
    for _, message in zip(range(2000), messages, strict=False):
        [invocation] = decode(message.value)
        assert invocation.event_type in EVENT_TYPES


# --- jsonstream -----------------------------------------------------------------------------------


def test_split_pretty_printed_stream_with_lines() -> None:
    text = fixture("wrangler_tail.out")
    chunks = jsonstream.split(text)
    assert [orjson.loads(c.data)["event"].get("type") for c in chunks] == [
        "overload",
        None,
        None,
        "overload-stop",
    ]
    lines = text.split(b"\n")
    for chunk in chunks:
        assert lines[chunk.line - 1].startswith(b"{")
    assert chunks[0].line == 1


def test_split_tricky_values() -> None:
    stream = b'\xef\xbb\xbf {"a": "}{\\"]"}\n[1, [2]]\n"str{"  42 true\nnull{"b":1}'
    chunks = jsonstream.split(stream)
    assert [orjson.loads(c.data) for c in chunks] == [
        {"a": '}{"]'},
        [1, [2]],
        "str{",
        42,
        True,
        None,
        {"b": 1},
    ]
    assert [c.line for c in chunks] == [1, 2, 3, 3, 3, 4, 4]
    assert [c.line for c in jsonstream.split(stream.decode("utf-8-sig"))] == [1, 2, 3, 3, 3, 4, 4]


def test_split_fed_in_any_pieces_gives_the_same_chunks() -> None:
    stream = fixture("wrangler_tail.out") + fixture("logpush/batch.ndjson") + b'"tail\\"x"'
    whole = jsonstream.split(stream)
    rng = random.Random(5)
    for _ in range(20):
        pieces, at = [], 0
        while at < len(stream):
            step = rng.choice((1, 2, 3, 7, 64, 1000))
            pieces.append(stream[at : at + step])
            at += step
        assert list(jsonstream.split_stream(pieces)) == whole


def test_split_reports_broken_values_with_their_line() -> None:
    stream = b'{"ok": 1}\n{"broken": "no end\n}\n]\n{"ok": 2}\n{"unterminated": [1, 2'
    chunks = jsonstream.split(stream)
    results = []
    for chunk in chunks:
        try:
            results.append(jsonstream.parse(chunk)[0])
        except DecodeError as error:
            results.append(error.field)
    assert results == [{"ok": 1}, "line 2", "line 4", {"ok": 2}, "line 6"]


def test_split_is_linear() -> None:
    big = b'{"message": "' + b'x\\"{[' * 400_000 + b'"}\n'
    start = time.perf_counter()
    chunks = list(jsonstream.split_stream(big[i : i + 1024] for i in range(0, len(big), 1024)))
    many = list(jsonstream.split_stream([b'{"a": [1, {"b": "c"}]}\n' * 50_000]))
    elapsed = time.perf_counter() - start
    assert len(chunks) == 1
    assert len(many) == 50_000
    assert elapsed < 5  # about 0.3 s here; a quadratic rescan would take minutes


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"scriptName": "api-gateway", "outcome": ', "invalid_json"),
        (b"\xff\xfe\x00garbage\x00", "invalid_json"),
        (b"[1, 2, 3]", "wrong_type"),
        (b'{"scriptName": 7, "logs": "none"}', "missing_field"),
        (b'{"outcome": "missing the point", "wallTime": "x"}', "wrong_type"),
        (b"null", "wrong_type"),
        (b'{"scriptName": "w", "logs": []}', "missing_field"),
        (b'{"not a trace item": 1}', "unknown_format"),
        (b"[" * 300 + b"]" * 300, "too_deep"),
        (b"  \n ", "empty"),
        (b'{"outcome": "ok", "eventTimestamp": 5}', "out_of_range"),
        (b'{"outcome": "ok", "wallTime": -3}', "out_of_range"),
        (b'{"outcome": "ok", "scriptName": "%s"}' % (b"w" * 2000), "too_long"),
    ],
)
def test_the_reason_label_names_the_kind_of_problem_never_the_input(
    value: bytes, reason: str
) -> None:
    """`tailpipe_decode_failures_total{reason}` used the problem text, which quotes the input
    (`expected a string, got string 'abc'`): a label from input, of unbounded cardinality."""
    error = error_of(value)
    assert error.reason == reason
    assert reason in DECODE_REASONS
