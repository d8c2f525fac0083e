"""OTLP logs: Cloudflare's invocation and console records, any OTel SDK's records, the value
forms (numbers as numbers and as strings), the rows they become, and errors that name the
field. Fixtures: tests/fixtures/otlp/ (its README names the sections of
/work/shared/docs/cloudflare-otlp-and-streaming-tail.md each follows)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import DECODE_REASONS, DecodeError
from pipeline.formats.decode import decode
from pipeline.formats.invocation import EVENT_TYPES, Invocation, LogLine
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.rollup import Rollups, count_invocation
from pipeline.transform.transformer import EVENT_COLUMNS, LOG_COLUMNS, Transformer
from tests.formats.test_decode_property import BASE, check, garbage, maybe, serialise

FIXTURES = Path(__file__).parent.parent / "fixtures" / "otlp"
T0 = 1_767_225_600_123
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def document(name: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return value


def one(value: bytes | dict[str, Any]) -> Invocation:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    [invocation] = decode(raw)
    return invocation


def error_of(value: dict[str, Any] | bytes) -> DecodeError:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()  # 2**64 too
    with pytest.raises(DecodeError) as caught:
        decode(raw)
    return caught.value


def attr(key: str, value: Any) -> dict[str, Any]:
    """An OTLP attribute of a Python value: strings, ints, floats, booleans."""
    kind = (
        "boolValue"
        if isinstance(value, bool)
        else "intValue"
        if isinstance(value, int)
        else "doubleValue"
        if isinstance(value, float)
        else "stringValue"
    )
    return {"key": key, "value": {kind: value}}


def export(
    records: list[dict[str, Any]], resource: list[dict[str, Any]], scope: str | None = None
) -> dict[str, Any]:
    scope_logs: dict[str, Any] = {"logRecords": records}
    if scope is not None:
        scope_logs["scope"] = {"name": scope}
    return {"resourceLogs": [{"resource": {"attributes": resource}, "scopeLogs": [scope_logs]}]}


def record(body: Any = "text", severity: int | None = 9, **attrs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"timeUnixNano": str(T0 * 1_000_000), "body": {"stringValue": body}}
    if severity is not None:
        found["severityNumber"] = severity
    found["attributes"] = [attr(k.replace("__", "."), v) for k, v in attrs.items()]
    return found


WORKER = [attr("cloudflare.script_name", "w"), attr("service.name", "w")]
SDK = [attr("service.name", "svc"), attr("telemetry.sdk.name", "opentelemetry")]


# --- Cloudflare ----------------------------------------------------------------------------------


def test_cloudflare_invocation_record_and_console_records() -> None:
    inv = one(document("cloudflare_fetch.json"))
    assert (inv.script, inv.event_type, inv.timestamp_ms, inv.outcome) == (
        "api-gateway",
        "fetch",
        T0,
        "unreported",  # the logs export carries none: a span attribute
    )
    assert (inv.method, inv.status, inv.source) == ("POST", 200, "otlp")
    assert inv.url == "https://api.example.com/v1/chat?stream=false&token=sk-live-1234567890abcdef"
    assert inv.script_version == "6e3d1a2f-4b7c-4d8e-9f10-2a3b4c5d6e7f"
    assert (inv.trace_id, inv.span_id, inv.sanitized) == (TRACE, SPAN, ())
    assert (inv.cpu_ms, inv.wall_ms, inv.truncated) == (None, None, False)
    assert [(line.timestamp_ms, line.level, line.text) for line in inv.logs] == [
        (T0 + 2, "info", "routing /v1/chat"),
        (
            T0 + 147,
            "info",
            '{"event":"llm_usage","model":"claude-sonnet-4-5",'
            '"usage":{"input_tokens":1834,"output_tokens":412}}',
        ),
        (T0 + 147, "warn", "github ratelimit remaining=112 limit=5000"),
        (T0 + 148, "error", "upstream slow: 4.2s"),
    ]
    # `name = "log"` and the sequence number say nothing a line needs: no data but the body's.
    assert [line.data for line in inv.logs] == [
        None,
        {
            "event": "llm_usage",
            "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 1834, "output_tokens": 412},
        },
        None,
        None,
    ]
    # Every attribute without a column is kept under its own name; the ones read are not.
    assert inv.extra["cloudflare.ray_id"] == "8f2a1b3c4d5e6f70"
    assert inv.extra["cloudflare.colo"] == "FRA"
    assert inv.extra["faas.invocation_id"] == "9c1e5b7a2d4f4e6a8b0c1d2e3f405162"
    assert inv.extra["cloudflare.asn"] == 3320
    assert inv.extra["geo.locality.name"] == "Frankfurt am Main"
    assert inv.extra["faas.trigger"] == "http"
    assert inv.extra["otel.scope.name"] == "workers-observability"
    for read in ("cloudflare.script_name", "cloudflare.handler_type", "http.request.method"):
        assert read not in inv.extra
    for read in ("url.full", "http.response.status_code", "cloudflare.script_version.id"):
        assert read not in inv.extra
    assert "body" not in inv.extra  # `POST <url>`: the method and URL already say it
    assert len(inv.extra) == 31


def test_console_records_are_put_in_their_sequence_order() -> None:
    """An export may list an invocation's console records out of order; Cloudflare's sequence
    numbers say the order they were emitted in (A6). Without a number on every record, the
    order they came in is kept."""
    in_order = [line.text for line in one(document("cloudflare_fetch.json")).logs]
    shuffled = document("cloudflare_fetch.json")
    records = shuffled["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records[1:] = records[:0:-1]  # the console records, last first
    assert [line.text for line in one(shuffled).logs] == in_order
    for attribute in records[2]["attributes"]:
        if attribute["key"] == "cloudflare.invocation.sequence.number":
            attribute["value"] = {"stringValue": "two"}
    assert [line.text for line in one(shuffled).logs] == in_order[::-1]


def test_console_lines_render_like_a_trace_items() -> None:
    """The same console calls as a trace item's `logs` give the same text and data."""
    inv = one(document("cloudflare_fetch.json"))
    messages = [
        [orjson.loads(r)["body"]["stringValue"]]
        for r in (orjson.dumps(x) for x in document("cloudflare_fetch.json")["resourceLogs"][0]
                  ["scopeLogs"][0]["logRecords"][1:])
    ]  # fmt: skip
    item = {
        "scriptName": "api-gateway",
        "outcome": "ok",
        "logs": [{"level": "log", "message": m} for m in messages],
    }
    trace = one(item)
    assert [(x.text, x.data) for x in inv.logs] == [(x.text, x.data) for x in trace.logs]


def test_numbers_as_json_numbers_and_as_strings_decode_alike() -> None:
    """Cloudflare writes int64s as JSON numbers, OTLP/JSON as strings: the same invocation."""
    as_sent = document("cloudflare_fetch.json")

    def rewrite(value: Any, to: type) -> Any:
        if isinstance(value, dict):
            return {
                k: to(v)
                if k in ("intValue", "timeUnixNano", "observedTimeUnixNano", "severityNumber")
                else rewrite(v, to)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(v, to) for v in value]
        return value

    strings, numbers = rewrite(as_sent, str), rewrite(as_sent, int)
    assert '"intValue":"200"' in orjson.dumps(strings).decode()
    assert '"timeUnixNano":1767225600123000000' in orjson.dumps(numbers).decode()
    assert one(strings) == one(numbers) == one(as_sent)


def test_the_docs_value_set_a_cron_invocation_in_otlps_own_number_form() -> None:
    inv = one(document("cloudflare_scheduled.json"))
    assert (inv.script, inv.event_type, inv.outcome, inv.timestamp_ms) == (
        "nightly-sync",
        "scheduled",
        "unreported",
        T0,
    )
    assert (inv.method, inv.url, inv.status) == (None, None, None)
    assert inv.script_tags == ("team:data", "env:production")
    assert inv.extra["body"] == "*/30 * * * *"  # the schedule: not said by any column
    assert inv.extra["faas.cron"] == "*/30 * * * *"
    assert inv.extra["cloudflare.invocation.sequence.number"] == 1
    assert inv.extra["telemetry.sdk.name"] == "cloudflare"
    assert [(x.level, x.text, x.data) for x in inv.logs] == [
        ("info", "synced 412 rows", None),
        ("debug", ' {"rows": 412, "table": "invoices"}\n', {"rows": 412, "table": "invoices"}),
    ]


def test_console_records_without_their_invocation_record() -> None:
    inv = one(document("cloudflare_console_only.json"))
    assert (inv.script, inv.event_type, inv.outcome, inv.timestamp_ms) == (
        "api-gateway",
        "unknown",
        "unreported",
        T0 + 200,
    )
    [line] = inv.logs
    assert line.data == {
        "log.kind": "api.request",
        "route_class": "api/demos",
        "status": 200,
        "duration_ms": 42,
    }
    assert (inv.trace_id, inv.method, inv.status) == (None, None, None)


def test_console_records_alone_keep_the_invocation_id_that_joins_them() -> None:
    inv = one(
        export(
            [record("a", faas__invocation_id="9c1e"), record("b", faas__invocation_id="9c1e")],
            [attr("service.name", "w"), attr("telemetry.sdk.name", "workers-observability")],
        )
    )
    assert inv.extra["faas.invocation_id"] == "9c1e"
    assert [x.data for x in inv.logs] == [None, None]
    # A part of an invocation whose invocation record came in another message: not a request.
    assert inv.fragment
    # The id may be the resource's (the docs' value set, A5).
    resource = [attr("service.name", "w"), attr("telemetry.sdk.name", "cloudflare"),
                attr("faas.invocation_id", "9c1e")]  # fmt: skip
    assert one(export([record("a")], resource)).fragment
    assert not one(document("cloudflare_fetch.json")).fragment


def test_a_fragment_counts_its_lines_but_not_a_request() -> None:
    rollups = Rollups()
    head = one(document("cloudflare_fetch.json"))
    tail = one(export([record("b", faas__invocation_id="9c1e")], WORKER))
    for inv in (head, tail):
        count_invocation(rollups, inv, T0, "w").levels["info"] += 1
    assert sum(h.requests for h in rollups.hourly.values()) == 1
    assert sum(h.levels["info"] for h in rollups.hourly.values()) == 2


def test_the_preflight_is_no_invocation() -> None:
    assert decode((FIXTURES / "cloudflare_preflight.json").read_bytes()) == []
    # A Worker of that name that says something else is one.
    service = [attr("service.name", "cloudflare-workers-observability")]
    [inv] = decode(orjson.dumps(export([record("Hello, world")], service)))
    assert inv.script == "cloudflare-workers-observability"


@pytest.mark.parametrize(
    ("handler", "trigger", "event_type", "kept"),
    [
        ("fetch", "http", "fetch", False),
        ("scheduled", "timer", "scheduled", False),
        ("alarm", None, "alarm", False),
        ("queue", "pubsub", "queue", False),
        ("email", None, "email", False),
        ("jsrpc", None, "rpc", False),
        ("rpc", None, "rpc", False),
        ("tail", None, "tail", False),
        ("hibernatableWebSocket", None, "websocket", False),
        ("Fetch", None, "fetch", False),
        ("workflow", None, "unknown", True),
        (None, "http", "fetch", False),
        (None, "timer", "scheduled", False),
        (None, "datasource", "unknown", False),
    ],
)
def test_event_type_from_the_handler_type_else_the_trigger(
    handler: str | None, trigger: str | None, event_type: str, kept: bool
) -> None:
    attrs: dict[str, Any] = {}
    if handler is not None:
        attrs["cloudflare__handler_type"] = handler
    if trigger is not None:
        attrs["faas__trigger"] = trigger
    inv = one(export([record("GET https://h/", **attrs)], WORKER))
    assert inv.event_type == event_type
    assert ("cloudflare.handler_type" in inv.extra) is kept
    if trigger is not None:
        assert inv.extra["faas.trigger"] == trigger  # not the event type's value: kept


def test_outcome_cpu_and_wall_when_given_and_what_else_is_read() -> None:
    inv = one(
        export(
            [
                record(
                    "GET https://h/",
                    cloudflare__handler_type="fetch",
                    cloudflare__outcome="exceededCpu",
                    cpu_time_ms=12.7,
                    cloudflare__wall_time=140,
                    cloudflare__entrypoint="Api",
                )
            ],
            WORKER,
        )
    )
    assert (inv.outcome, inv.cpu_ms, inv.wall_ms, inv.entrypoint) == ("exceededCpu", 12, 140, "Api")
    assert not {"cloudflare.outcome", "cpu_time_ms", "cloudflare.wall_time"} & set(inv.extra)


def test_a_resource_value_the_record_contradicts_is_kept_apart() -> None:
    resource = [*WORKER, attr("cloudflare.colo", "FRA"), attr("faas.version", "v1")]
    inv = one(
        export([record("x", cloudflare__handler_type="fetch", cloudflare__colo="AMS")], resource)
    )
    assert (inv.extra["cloudflare.colo"], inv.extra["resource.cloudflare.colo"]) == ("AMS", "FRA")
    assert inv.script_version == "v1"
    assert "faas.version" not in inv.extra


def test_other_attributes_of_a_console_record_are_its_data() -> None:
    """What a console record carries beyond `name = "log"`, the sequence number and what its
    invocation says already is kept in the line's data (names may change in the beta)."""
    main = record("GET https://h/", cloudflare__handler_type="fetch", cloudflare__ray_id="8f2a")
    console = record(
        '{"a": 1}',
        name="log",
        cloudflare__invocation__sequence__number=2,
        cloudflare__ray_id="8f2a",
        console__method="info",
        a=2,
    )
    [line] = one(export([main, console], WORKER)).logs
    assert line.data == {"a": 2, "console.method": "info"}  # an attribute wins over the body


def test_the_runtimes_size_limit_marker_marks_the_invocation_truncated() -> None:
    marker = record("Log size limit exceeded: More than 256KB of data", 13)
    inv = one(export([record("x", cloudflare__handler_type="fetch"), marker], WORKER))
    assert inv.truncated


# --- any OTel SDK ---------------------------------------------------------------------------------


def test_an_sdk_event_keeps_its_name() -> None:
    """`eventName` (an OTel event: `logger.emit({eventName, ...})`, often with no body) is kept
    in the line's data, and is its text when it has none; it was dropped before."""
    named = {**record("page shown"), "eventName": "browser.page_view"}
    bare = {k: v for k, v in record(None, 21).items() if k != "body"} | {"eventName": "ev.name"}
    first, second = one(export([named, bare], SDK)).logs
    assert (first.text, first.data) == ("page shown", {"otel.event_name": "browser.page_view"})
    assert (second.level, second.text, second.data) == ("error", "ev.name",
                                                        {"otel.event_name": "ev.name"})  # fmt: skip


def test_sdk_records_are_the_lines_of_an_otel_invocation() -> None:
    inv = one(document("sdk_python.json"))
    assert (inv.script, inv.event_type, inv.outcome, inv.source) == (
        "checkout",
        "otel",
        "ok",
        "otlp",
    )
    assert inv.timestamp_ms == T0 + 1000  # the earliest record's
    assert (inv.trace_id, inv.span_id) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    assert (inv.method, inv.url, inv.status, inv.wall_ms) == (None, None, None, None)
    # The release and environment, stored as the logger stores its own.
    assert inv.script_version == "2.3.1"
    assert inv.script_tags == ("environment:production",)
    assert inv.extra == {
        "host.name": "checkout-7d9f8b6c5-x2x4z",
        "process.pid": 4242,
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.39.0",
        "otel.scope.name": "checkout.payments",
    }
    assert inv.logs == (
        LogLine(
            T0 + 1000,
            "info",
            "charging order 1182",
            {
                "code.file.path": "/app/checkout/payments.py",
                "code.function.name": "charge",
                "code.line.number": 88,
                "order.id": "1182",
                "amount": 49.9,
                "retry": False,
            },
        ),
        LogLine(
            T0 + 1120,
            "warn",
            '{"provider":"stripe","x-ratelimit-remaining":3}',
            {"provider": "stripe", "x-ratelimit-remaining": 3},
        ),
        LogLine(T0 + 1180, "error", "charge failed", {"code.function.name": "charge"}),
    )
    [exc] = inv.exceptions
    assert (exc.timestamp_ms, exc.name, exc.message) == (
        T0 + 1180,
        "stripe.error.CardError",
        "Your card was declined.",
    )
    assert exc.stack is not None
    assert exc.stack.startswith("Traceback (most recent call last):\n")


def test_several_scopes_are_listed() -> None:
    doc = export([record("a")], SDK, scope="app.db")
    doc["resourceLogs"][0]["scopeLogs"].append(
        {"scope": {"name": "app.http", "version": "1"}, "logRecords": [record("b")]}
    )
    inv = one(doc)
    assert inv.extra["otel.scopes"] == [{"name": "app.db"}, {"name": "app.http", "version": "1"}]
    assert [x.text for x in inv.logs] == ["a", "b"]


@pytest.mark.parametrize(
    ("severity", "text", "level"),
    [
        *[(n, None, "debug") for n in range(1, 9)],
        *[(n, None, "info") for n in range(9, 13)],
        *[(n, None, "warn") for n in range(13, 17)],
        *[(n, None, "error") for n in range(17, 25)],
        ("13", None, "warn"),
        ("SEVERITY_NUMBER_FATAL2", None, "error"),
        ("SEVERITY_NUMBER_DEBUG", None, "debug"),
        (0, "WARNING", "warn"),
        (None, "Error", "error"),
        (None, "CRITICAL", "error"),
        (None, "trace", "debug"),
        (None, "notice", "info"),
        (None, "verbose", "log"),
        (None, None, "log"),
        ("SEVERITY_NUMBER_UNSPECIFIED", "info", "info"),
        (9, "ERROR", "info"),  # the number wins
    ],
)
def test_levels_follow_the_otel_severity_ranges(
    severity: int | str | None, text: str | None, level: str
) -> None:
    rec = record("x", severity=None)
    if severity is not None:
        rec["severityNumber"] = severity
    if text is not None:
        rec["severityText"] = text
    [line] = one(export([rec], SDK)).logs
    assert line.level == level


def test_every_attribute_value_kind() -> None:
    values = [
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "i", "value": {"intValue": "-9223372036854775808"}},
        {"key": "d", "value": {"doubleValue": 1}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "d_text", "value": {"doubleValue": "2.5"}},
        {"key": "bytes", "value": {"bytesValue": "AAEC"}},
        {
            "key": "list",
            "value": {"arrayValue": {"values": [{"intValue": 1}, {"stringValue": "a"}]}},
        },
        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {}}]}}},
        {"key": "empty_list", "value": {"arrayValue": {}}},
        {"key": "null", "value": {}},
        {"key": "absent"},
    ]
    rec = record("x")
    rec["attributes"] = values
    [line] = one(export([rec], SDK)).logs
    assert line.data == {
        "s": "x",
        "b": True,
        "i": -(2**63),
        "d": 1.0,
        "nan": "NaN",
        "d_text": 2.5,
        "bytes": "AAEC",
        "list": [1, "a"],
        "map": {"k": None},
        "empty_list": [],
        "null": None,
        "absent": None,
    }
    orjson.dumps(line.data)


def test_bodies_of_every_kind() -> None:
    bodies = [
        {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}},
        {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}},
        {"intValue": "7"},
        {},
    ]
    records = [{**record(), "body": body} for body in bodies]
    del records[-1]["body"]
    inv = one(export(records, SDK))
    assert [(x.text, x.data) for x in inv.logs] == [
        ("a 2", None),  # an array body reads like console arguments
        ('{"k":false}', {"k": False}),
        ("7", None),
        ("", None),
    ]


@pytest.mark.parametrize(
    ("trace", "span", "want", "sanitized"),
    [
        (TRACE.upper(), SPAN.upper(), (TRACE, SPAN), ()),
        (TRACE, "", (TRACE, None), ()),  # OTLP writes an absent id as ""
        ("", "", (None, None), ()),
        ("0" * 32, SPAN, (None, None), ("trace_id", "span_id")),
        (TRACE, "xyz", (TRACE, None), ("span_id",)),
        (12, None, (None, None), ("trace_id",)),
    ],
)
def test_trace_and_span_ids_are_checked_like_every_span_context(
    trace: Any, span: Any, want: tuple[str | None, str | None], sanitized: tuple[str, ...]
) -> None:
    rec = {**record(), "traceId": trace, "spanId": span}
    inv = one(export([rec], SDK))
    assert (inv.trace_id, inv.span_id) == want
    assert inv.sanitized == sanitized


def test_the_first_record_with_ids_gives_them() -> None:
    later = {**record("b"), "traceId": TRACE, "spanId": SPAN}
    inv = one(export([record("a"), later], SDK))
    assert (inv.trace_id, inv.span_id) == (TRACE, SPAN)


def test_times_fall_back_to_the_observed_time_and_zero_is_unknown() -> None:
    observed = {**record("a"), "timeUnixNano": "0", "observedTimeUnixNano": (T0 + 5) * 10**6}
    none = {**record("b"), "timeUnixNano": 0}
    inv = one(export([none, observed], SDK))
    assert [x.timestamp_ms for x in inv.logs] == [None, T0 + 5]
    assert inv.timestamp_ms == T0 + 5


def test_arrays_and_streams_of_exports() -> None:
    a, b = export([record("a")], SDK), export([record("b")], WORKER)
    preflight = (FIXTURES / "cloudflare_preflight.json").read_bytes()
    assert [i.script for i in decode(orjson.dumps([a, b]))] == ["svc", "w"]
    assert [i.script for i in decode(orjson.dumps(a) + b"\n" + preflight + orjson.dumps(b))] == [
        "svc",
        "w",
    ]


def test_a_nul_in_a_console_record_is_repaired_and_counted() -> None:
    inv = one(export([record("a\u0000b")], SDK))
    assert inv.logs[0].text == "a\ufffdb"
    assert inv.sanitized == ("message",)


def test_a_double_too_large_is_refused_on_the_lenient_path_too() -> None:
    """orjson refuses 1e400 as a number; the standard library's parser, which reads a message
    with a lone surrogate, gives a Python int that no float holds."""
    rec = {**record("\ud83d cut emoji"), "attributes": [attr("big", 1.0)]}
    raw = json.dumps(export([rec], SDK)).replace("1.0", "1" + "0" * 400).encode()
    error = error_of(raw)
    assert error.field == f"{RECORD}.attributes[0].value.doubleValue"
    assert error.problem.endswith("is too large for a double")
    assert error.reason == "out_of_range"


# --- rows -----------------------------------------------------------------------------------------


def test_rows_are_redacted_and_extracted_like_a_trace_items() -> None:
    batch = Batch()
    raw = (FIXTURES / "cloudflare_fetch.json").read_bytes()
    Transformer(Extractor.from_files()).add(batch, "t", 0, 3, T0, None, raw)
    [part] = batch.parts.values()
    [event_row] = part.events
    event = dict(zip(EVENT_COLUMNS, event_row, strict=True))
    lines = [dict(zip(LOG_COLUMNS, row, strict=True)) for row in part.logs]
    assert (event["script"], event["event_type"], event["source"], event["status"]) == (
        "api-gateway",
        "fetch",
        "otlp",
        200,
    )
    assert "sk-live-1234567890abcdef" not in event["url"]
    assert "sk-live-1234567890abcdef" not in event["extra"]
    assert json.loads(event["extra"])["cloudflare.ray_id"] == "8f2a1b3c4d5e6f70"
    assert event["trace_id"] == bytes.fromhex(TRACE)
    assert [x["level"] for x in lines] == ["info", "info", "warn", "error"]
    assert all(x["trace_id"] == bytes.fromhex(TRACE) for x in lines)
    # The console.log'd LLM response is counted as the trace item's would be.
    models = {key[2] for key in part.rollups.api}
    assert "claude-sonnet-4-5" in models


def test_sdk_exception_records_become_exception_rows() -> None:
    batch = Batch()
    raw = (FIXTURES / "sdk_python.json").read_bytes()
    Transformer(Extractor.from_files()).add(batch, "t", 0, 0, T0, None, raw)
    [part] = batch.parts.values()
    lines = [dict(zip(LOG_COLUMNS, row, strict=True)) for row in part.logs]
    assert [x["level"] for x in lines] == ["info", "warn", "error", "exception"]
    assert lines[-1]["message"] == "stripe.error.CardError: Your card was declined."
    assert len(part.rollups.errors) == 1


# --- errors ---------------------------------------------------------------------------------------

RECORD = "resourceLogs[0].scopeLogs[0].logRecords[0]"


def _with(change: dict[str, Any]) -> dict[str, Any]:
    doc = export([record("x", cloudflare__handler_type="fetch")], WORKER)
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0].update(change)
    return doc


def _attrs(*attrs: dict[str, Any]) -> dict[str, Any]:
    return export([{**record("x"), "attributes": list(attrs)}], WORKER)


MALFORMED = [
    ({"resourceLogs": {}}, "resourceLogs", "expected an array, got object"),
    ({"resourceLogs": []}, "resourceLogs", "holds 0 entries; a message holds exactly one"),
    (
        {"resourceLogs": [{"scopeLogs": []}, {"scopeLogs": []}]},
        "resourceLogs",
        "holds 2 entries; a message holds exactly one",
    ),
    ({"resourceLogs": [3]}, "resourceLogs[0]", "expected an object, got number 3"),
    ({"resourceLogs": [{}]}, "resourceLogs[0].scopeLogs", "missing: no log record in any"),
    ({"resourceLogs": [{"resource": []}]}, "resourceLogs[0].resource", "expected an object"),
    (
        {"resourceLogs": [{"resource": {"attributes": {}}}]},
        "resourceLogs[0].resource.attributes",
        "expected an array of {key, value}, got object",
    ),
    (
        {"resourceLogs": [{"resource": {"attributes": [{"key": 1}]}}]},
        "resourceLogs[0].resource.attributes[0].key",
        "expected a string, got number 1",
    ),
    ({"resourceLogs": [{"scopeLogs": [[]]}]}, "resourceLogs[0].scopeLogs[0]", "expected an obj"),
    (
        {"resourceLogs": [{"scopeLogs": [{"logRecords": {}}]}]},
        "resourceLogs[0].scopeLogs[0].logRecords",
        "expected an array",
    ),
    (
        {"resourceLogs": [{"scopeLogs": [{"scope": {"name": 5}, "logRecords": []}]}]},
        "resourceLogs[0].scopeLogs[0].scope.name",
        "expected a string, got number 5",
    ),
    (
        {"resourceLogs": [{"scopeLogs": [{"logRecords": ["x"]}]}]},
        RECORD,
        "expected an object, got string 'x'",
    ),
    (_with({"timeUnixNano": "soon"}), f"{RECORD}.timeUnixNano", "expected an int64"),
    (_with({"timeUnixNano": 1767225600123}), f"{RECORD}.timeUnixNano", "1767225600123 is not"),
    (_with({"timeUnixNano": 2**64}), f"{RECORD}.timeUnixNano", f"{2**64} is outside int64"),
    (_with({"severityNumber": 25}), f"{RECORD}.severityNumber", "25 is not a severity (0..24)"),
    (_with({"severityNumber": 9.5}), f"{RECORD}.severityNumber", "expected an int64"),
    (_with({"severityNumber": None, "severityText": 3}), f"{RECORD}.severityText", "expected a"),
    (_with({"body": "x"}), f"{RECORD}.body", "expected an AnyValue object, got string 'x'"),
    (_with({"body": {"fooValue": 1}}), f"{RECORD}.body", "expected an AnyValue (one of"),
    (_with({"body": {"boolValue": "yes"}}), f"{RECORD}.body.boolValue", "expected a boolean"),
    (_with({"body": {"doubleValue": "fast"}}), f"{RECORD}.body.doubleValue", "expected a double"),
    (_with({"body": {"arrayValue": []}}), f"{RECORD}.body.arrayValue", "expected an object"),
    (
        _with({"body": {"arrayValue": {"values": [{"intValue": 1.5}]}}}),
        f"{RECORD}.body.arrayValue.values[0].intValue",
        "expected an int64",
    ),
    (
        _with({"body": {"kvlistValue": {"values": [{"key": "k", "value": 3}]}}}),
        f"{RECORD}.body.kvlistValue.values[0].value",
        "expected an AnyValue object",
    ),
    (_with({"eventName": 1}), f"{RECORD}.eventName", "expected a string"),
    (
        _attrs(attr("http.request.method", 3), attr("cloudflare.handler_type", "fetch")),
        f"{RECORD}.attributes[http.request.method]",
        "expected a string, got number 3",
    ),
    (
        _attrs(attr("http.response.status_code", 1000), attr("faas.trigger", "http")),
        f"{RECORD}.attributes[http.response.status_code]",
        "1000 is not an HTTP status",
    ),
    (
        _attrs(attr("cloudflare.wall_time", -1), attr("faas.trigger", "http")),
        f"{RECORD}.attributes[cloudflare.wall_time]",
        "-1 is negative",
    ),
    (
        export([record("x")], [attr("cloudflare.script_name", 7)]),
        "resourceLogs[0].resource.attributes[cloudflare.script_name]",
        "expected a string, got number 7",
    ),
    (
        export([record("x")], [attr("cloudflare.script_name", "x" * 1100)]),
        "resourceLogs[0].resource.attributes[cloudflare.script_name]",
        "1100 bytes long",
    ),
    (
        export([record("x")], [*WORKER, attr("cloudflare.script_tags", "a,b")]),
        "resourceLogs[0].resource.attributes[cloudflare.script_tags]",
        "expected an array of strings",
    ),
    (
        _attrs(attr("exception.type", True)),
        f"{RECORD}.attributes[exception.type]",
        "expected a string, got boolean true",
    ),
    (
        export([record("x")], [attr("service.version", 2)]),
        "resourceLogs[0].resource.attributes[service.version]",
        "expected a string, got number 2",
    ),
]


@pytest.mark.parametrize(("value", "field", "problem"), MALFORMED)
def test_malformed_exports_name_the_field(value: dict[str, Any], field: str, problem: str) -> None:
    error = error_of(value)
    assert error.field == field
    assert error.problem.startswith(problem)
    assert error.reason in DECODE_REASONS


def test_the_malformed_fixture_names_the_attribute() -> None:
    error = error_of((FIXTURES / "malformed_status.json").read_bytes())
    assert error.field == f"{RECORD}.attributes[24].value.intValue"
    assert error.reason == "wrong_type"


def test_an_error_inside_an_array_names_the_element() -> None:
    error = error_of(orjson.dumps([export([record("a")], SDK), {"resourceLogs": 1}]))
    assert error.field == "[1].resourceLogs"


# --- property: whatever the shape, an invocation or a DecodeError ---------------------------------

_ints = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers(0, 2**63).map(str),
    st.sampled_from(["-1", "1e3", "", " 1", "0x10", "NaN"]),
)
_times = maybe(
    st.one_of(
        st.integers(T0 * 10**6 - 10**15, T0 * 10**6 + 10**15),
        st.integers(T0 * 10**6, T0 * 10**6 + 10**12).map(str),
        st.sampled_from([0, "0", 1767225600123, 2**63, 1.7672256e18]),
    )
)
_any_values: st.SearchStrategy[Any] = st.deferred(
    lambda: maybe(
        st.one_of(
            st.fixed_dictionaries({"stringValue": maybe(st.text(max_size=8))}),
            st.fixed_dictionaries({"intValue": maybe(_ints)}),
            st.fixed_dictionaries(
                {"doubleValue": maybe(st.one_of(st.floats(), st.text(max_size=4)))}
            ),
            st.fixed_dictionaries({"boolValue": maybe(st.booleans())}),
            st.fixed_dictionaries({"bytesValue": maybe(st.text(max_size=4))}),
            st.fixed_dictionaries(
                {
                    "arrayValue": maybe(
                        st.fixed_dictionaries({"values": st.lists(_any_values, max_size=2)})
                    )
                }
            ),
            st.fixed_dictionaries(
                {"kvlistValue": maybe(st.fixed_dictionaries({"values": _attribute_lists}))}
            ),
            st.just({}),
        )
    )
)
_keys = st.sampled_from(
    [
        "cloudflare.script_name", "service.name", "faas.name", "cloudflare.handler_type",
        "faas.trigger", "faas.invocation_id", "http.request.method", "url.full",
        "http.response.status_code", "cloudflare.script_version.id", "faas.version",
        "cloudflare.outcome", "cpu_time_ms", "cloudflare.wall_time", "cloudflare.entrypoint",
        "cloudflare.script_tags", "telemetry.sdk.name", "cloud.provider", "name",
        "cloudflare.invocation.sequence.number", "exception.type", "exception.message",
        "exception.stacktrace", "service.version", "deployment.environment.name", "x",
    ]
)  # fmt: skip
_attribute_lists: st.SearchStrategy[Any] = maybe(
    st.lists(
        maybe(st.fixed_dictionaries({"key": maybe(_keys)}, optional={"value": _any_values})),
        max_size=4,
    )
)
_cloudflare_values = st.sampled_from(
    [
        attr("telemetry.sdk.name", "workers-observability"),
        attr("cloudflare.handler_type", "fetch"),
        attr("faas.trigger", "http"),
        attr("service.name", "cloudflare-workers-observability"),
        attr("http.response.status_code", 200),
    ]
)
_records = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "timeUnixNano": _times,
            "observedTimeUnixNano": _times,
            "severityNumber": maybe(
                st.one_of(st.integers(-1, 26), st.sampled_from(["9", "SEVERITY_NUMBER_WARN", "X"]))
            ),
            "severityText": maybe(st.sampled_from(["INFO", "warning", "", "x"])),
            "body": maybe(
                st.one_of(_any_values, st.just({"stringValue": "Hello from Cloudflare"}))
            ),
            "attributes": st.one_of(_attribute_lists, st.lists(_cloudflare_values, max_size=3)),
            "traceId": maybe(st.sampled_from([TRACE, "", "0" * 32, TRACE.upper(), "zz"])),
            "spanId": maybe(st.sampled_from([SPAN, "", "0" * 16])),
            "eventName": maybe(st.text(max_size=3)),
        },
    )
)
_exports = st.fixed_dictionaries(
    {
        "resourceLogs": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "resource": maybe(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "attributes": st.one_of(
                                            _attribute_lists,
                                            st.lists(_cloudflare_values, max_size=3),
                                        )
                                    },
                                )
                            ),
                            "scopeLogs": maybe(
                                st.lists(
                                    maybe(
                                        st.fixed_dictionaries(
                                            {},
                                            optional={
                                                "scope": maybe(
                                                    st.fixed_dictionaries(
                                                        {},
                                                        optional={
                                                            "name": maybe(st.text(max_size=3)),
                                                            "version": garbage,
                                                        },
                                                    )
                                                ),
                                                "logRecords": maybe(st.lists(_records, max_size=3)),
                                            },
                                        )
                                    ),
                                    max_size=2,
                                )
                            ),
                        },
                    )
                ),
                min_size=1,
                max_size=2,
            )
        )
    }
)


@given(_exports, st.booleans())
@settings(BASE, max_examples=3000)
def test_otlp_shaped_documents(value: dict[str, Any], ascii_only: bool) -> None:
    check(serialise(value, ascii_only, None))


_FIXTURE_VALUES = [
    orjson.loads(p.read_bytes()) for p in sorted(FIXTURES.glob("*.json")) if p.is_file()
]


@given(st.sampled_from(_FIXTURE_VALUES), st.data())
@settings(BASE, max_examples=2000)
def test_otlp_fixtures_with_a_node_replaced(value: Any, data: st.DataObject) -> None:
    """A fixture with one node somewhere inside replaced by something of another shape."""
    root = copy.deepcopy(value)
    parent: Any = None
    key: Any = None
    node = root
    while isinstance(node, dict | list) and node and data.draw(st.integers(0, 6)):
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        parent, node = node, node[key]
    if parent is not None:
        parent[key] = data.draw(st.one_of(garbage, st.just(json.dumps(node)), st.just(None)))
    check(serialise(root, False, None))


def test_every_event_type_it_gives_is_known() -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        try:
            found = decode(path.read_bytes())
        except DecodeError:
            continue
        for inv in found:
            assert inv.event_type in EVENT_TYPES


def test_a_cloudflare_invocation_whose_records_hold_an_exception_is_an_exception() -> None:
    """Without `cloudflare.outcome` the outcome is `unreported` (not a failure the error rate
    counts), unless the invocation's records hold an exception: then it failed."""
    doc = document("cloudflare_fetch.json")
    records = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert one(doc).outcome == "unreported"
    records.append(
        {
            "timeUnixNano": str((T0 + 5) * 1_000_000),
            "severityNumber": 17,
            "body": {"stringValue": "TypeError: x is undefined"},
            "attributes": [
                attr("exception.type", "TypeError"),
                attr("exception.message", "x is undefined"),
            ],
        }
    )
    failed = one(doc)
    assert failed.outcome == "exception"
    assert [x.name for x in failed.exceptions] == ["TypeError"]
    said = document("cloudflare_fetch.json")
    said["resourceLogs"][0]["resource"]["attributes"].append(attr("cloudflare.outcome", "ok"))
    assert one(said).outcome == "ok"
