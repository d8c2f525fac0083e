"""`POST /v1/logs`, the OTLP/HTTP logs receiver, over real HTTP against the real Kafka.

Cloudflare-shaped exports are written from the attributes its docs and public captures list
(../shared/docs/cloudflare-otlp-and-streaming-tail.md, A5 and A6); protobuf exports are built
with the `opentelemetry-proto` classes; and a real client nobody here wrote, the OpenTelemetry
Python SDK with its OTLP/HTTP protobuf exporter, exports to a running collector. Every message
is read back from the topic: one `resourceLogs` entry, one invocation group, OTLP/JSON with hex
ids, keyed by the group's invocation id, else its trace id, else its digest.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pipeline.collector import otlp_logs, otlp_traces
from pipeline.collector.app import create_app
from pipeline.collector.items import MAX_ITEM_BYTES
from pipeline.formats.identity import item_key
from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.collector.test_collect import (
    PARTITIONS,
    TOKEN,
    bearer,
    eventually,
    read_topic,
    running,
    topic_end,
)
from tests.conftest import ROOT, free_port

SECRET_HEADER = "cf-otlp-secret"
JSON = {"Content-Type": "application/json"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
BASE_NS = 1_790_166_300_617_000_000


@pytest.fixture
async def otlp_settings(settings: Settings) -> Settings:
    await ensure_topics(settings, {settings.topic: PARTITIONS})
    return replace(settings, collect_tokens=(TOKEN,), collect_secret_header=SECRET_HEADER)


# -- payloads -------------------------------------------------------------------------------------


def attr(key: str, value: object, *, int_as_string: bool = False) -> dict[str, Any]:
    """An OTLP/JSON KeyValue; integers as JSON numbers (as Cloudflare sends them) or strings."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value) if int_as_string else value}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


@dataclass(frozen=True)
class Invocation:
    """One Worker invocation as Workers Observability exports its logs."""

    invocation_id: str
    trace_id: str
    span_id: str
    path: str
    status: int


def invocation(n: int) -> Invocation:
    return Invocation(uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex[:16], f"/items/{n}", 200)


def invocation_record(inv: Invocation, *, int_as_string: bool = False) -> dict[str, Any]:
    """The per-invocation log record (A6), with every attribute the captures show."""
    url = f"https://shop.example.com{inv.path}?page=2"

    def a(key: str, value: object) -> dict[str, Any]:
        return attr(key, value, int_as_string=int_as_string)

    return {
        "timeUnixNano": str(BASE_NS),
        "observedTimeUnixNano": str(BASE_NS + 5_000_000),
        "severityNumber": 9,
        "body": {"stringValue": f"GET {url}"},
        "attributes": [
            a("cloudflare.execution_model", "stateless"),
            a("cloudflare.handler_type", "fetch"),
            a("faas.invocation_id", inv.invocation_id),
            a("cloudflare.ray_id", inv.invocation_id[:16]),
            a("faas.trigger", "http"),
            a("url.full", url),
            a("url.scheme", "https"),
            a("url.path", inv.path),
            a("url.query", "page=2"),
            a("server.address", "shop.example.com"),
            a("network.protocol.name", "https"),
            a("http.request.method", "GET"),
            a("user_agent.original", "Mozilla/5.0 (compatible; example)"),
            a("cloudflare.colo", "FRA"),
            a("cloudflare.verified_bot_category", ""),
            a("cloudflare.asn", 3320),
            a("geo.timezone", "Europe/Berlin"),
            a("geo.country.code", "DE"),
            a("http.response.status_code", inv.status),
            a("cloudflare.invocation.sequence.number", 1),
        ],
        "droppedAttributesCount": 0,
        "flags": 1,
        "traceId": inv.trace_id,
        "spanId": inv.span_id,
    }


def console_record(inv: Invocation | None, n: int, body: str, *, ids: bool) -> dict[str, Any]:
    """A `console.log` record: the text in the body, only `name` and a sequence number."""
    record: dict[str, Any] = {
        "timeUnixNano": str(BASE_NS + n * 1_000_000),
        "observedTimeUnixNano": str(BASE_NS + n * 1_000_000),
        "severityNumber": 9,
        "body": {"stringValue": body},
        "attributes": [attr("name", "log"), attr("cloudflare.invocation.sequence.number", n)],
    }
    if ids and inv is not None:
        record["traceId"], record["spanId"] = inv.trace_id, inv.span_id
    return record


def cloudflare_resource(script: str = "shop") -> dict[str, Any]:
    """The resource of a Worker's exports (A5)."""
    return {
        "attributes": [
            attr("cloudflare.colo", "FRA"),
            attr("faas.invoked_region", "EEUR"),
            attr("cloudflare.script_name", script),
            attr("cloud.provider", "cloudflare"),
            attr("cloud.platform", "cloudflare.workers"),
            attr("faas.name", script),
            attr("faas.version", "2d1bd0b6-0000-4000-8000-000000000001"),
            attr("telemetry.sdk.language", "js"),
            attr("telemetry.sdk.name", "workers-observability"),
            attr("service.name", script),
            attr("cloudflare.script_version.id", "2d1bd0b6-0000-4000-8000-000000000001"),
        ],
        "droppedAttributesCount": 0,
    }


def resource_logs(records: list[Any], script: str = "shop") -> dict[str, Any]:
    return {
        "resource": cloudflare_resource(script),
        "scopeLogs": [{"scope": {"name": "workers-observability"}, "logRecords": records}],
        "schemaUrl": "",
    }


def cloudflare_entry(inv: Invocation, *, int_as_string: bool = False) -> dict[str, Any]:
    """One invocation's entry: its invocation log, a text line and a logged JSON object."""
    logged = orjson.dumps({"event": "cart.updated", "items": 3, "user": "u-17"}).decode()
    return resource_logs(
        [
            invocation_record(inv, int_as_string=int_as_string),
            console_record(inv, 2, f"handling {inv.path}", ids=False),
            console_record(inv, 3, logged, ids=False),
        ]
    )


def export(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceLogs": list(entries)})


def one_entry(value: bytes) -> dict[str, Any]:
    """The only `resourceLogs` entry of a published message."""
    document = orjson.loads(value)
    assert list(document) == ["resourceLogs"]
    [entry] = document["resourceLogs"]
    assert isinstance(entry, dict)
    return entry


def records_of(value: bytes) -> list[dict[str, Any]]:
    return [r for scope in one_entry(value)["scopeLogs"] for r in scope["logRecords"]]


def metric(text: str, series: str) -> float:
    [line] = [x for x in text.splitlines() if x.startswith(series + " ")]
    return float(line.rsplit(" ", 1)[1])


def requests_series(outcome: str) -> str:
    return f'tailpipe_collect_otlp_requests_total{{outcome="{outcome}",route="/v1/logs"}}'


def records_series(result: str) -> str:
    return f'tailpipe_collect_otlp_records_total{{result="{result}",route="/v1/logs"}}'


# -- Cloudflare's JSON exports --------------------------------------------------------------------


async def test_cloudflare_exports_become_one_message_per_invocation(
    otlp_settings: Settings,
) -> None:
    """Workers Observability posts gzip'd JSON, one `resourceLogs` entry per invocation, with
    the token in a header the user typed into the destination. Each invocation becomes one
    message keyed by its `faas.invocation_id`, holding its records exactly as sent (integers
    as numbers or as strings alike), its console lines with it although they carry no id."""
    invocations = [invocation(n) for n in range(3)]
    entries = [
        cloudflare_entry(invocations[0]),
        cloudflare_entry(invocations[1], int_as_string=True),
        cloudflare_entry(invocations[2]),
    ]
    # Two invocations in one entry: each console line joins the invocation of its trace.
    a, b = invocation(10), invocation(11)
    shared = resource_logs(
        [
            invocation_record(a),
            console_record(b, 2, "b's line", ids=True),
            invocation_record(b),
            console_record(a, 2, "a's line", ids=True),
        ]
    )
    destination = {SECRET_HEADER: TOKEN, "Content-Encoding": "gzip", **JSON}
    async with running(otlp_settings) as client:
        response = await client.post(
            "/v1/logs", content=gzip.compress(export(*entries)), headers=destination
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {}  # full success: no partialSuccess
        response = await client.post(
            "/v1/logs", content=export(shared), headers={**bearer(), **JSON}
        )
        assert (response.status_code, response.json()) == (200, {})
        # The sender retries the first invocation: same key, so the same partition.
        again = gzip.compress(export(cloudflare_entry(invocations[0])))
        response = await client.post("/v1/logs", content=again, headers=destination)
        assert response.status_code == 200, response.text
        metrics = (await client.get("/metrics")).text

    records = await read_topic(otlp_settings, 6)
    keyed: dict[bytes | None, list[Any]] = {}
    for record in records:
        keyed.setdefault(record.key, []).append(record)
    assert set(keyed) == {inv.trace_id.encode() for inv in [*invocations, a, b]}
    for inv, entry in zip(invocations, entries, strict=True):
        copies = keyed[inv.trace_id.encode()]
        assert len(copies) == (2 if inv is invocations[0] else 1)
        assert all(one_entry(c.value) == entry for c in copies)  # as sent, numbers and all
    first, retried = keyed[invocations[0].trace_id.encode()]
    assert first.partition == retried.partition
    assert b'"intValue":200' in first.value
    assert b'"intValue":"200"' in keyed[invocations[1].trace_id.encode()][0].value
    shared_records = shared["scopeLogs"][0]["logRecords"]
    for inv, mine in ((a, [shared_records[0], shared_records[3]]), (b, shared_records[1:3])):
        [message] = keyed[inv.trace_id.encode()]
        entry = one_entry(message.value)
        assert entry["resource"] == cloudflare_resource()
        assert entry["scopeLogs"][0]["scope"] == {"name": "workers-observability"}
        assert records_of(message.value) == mine
    assert metric(metrics, requests_series("accepted")) == 3
    assert metric(metrics, records_series("accepted")) == 3 * 4 + 4
    assert metric(metrics, 'tailpipe_collect_items_total{route="/v1/logs"}') == 6


async def test_cloudflare_preflight_is_answered_and_publishes_nothing(
    otlp_settings: Settings,
) -> None:
    """Creating or changing a destination sends a preflight, which must get a 2xx and must
    not be stored as an invocation."""
    hello = {
        "resource": {"attributes": [attr("service.name", "cloudflare-workers-observability")]},
        "scopeLogs": [
            {
                "scope": {"name": "workers-observability"},
                "logRecords": [
                    {
                        "timeUnixNano": str(BASE_NS),
                        "severityNumber": 9,
                        "body": {"stringValue": "Hello from Cloudflare 👋 (tailpipe-logs)"},
                    }
                ],
            }
        ],
    }
    headers = {SECRET_HEADER: TOKEN, "Content-Encoding": "gzip", **JSON}
    async with running(otlp_settings) as client:
        response = await client.post(
            "/v1/logs", content=gzip.compress(export(hello)), headers=headers
        )
        assert (response.status_code, response.json()) == (200, {}), response.text
        refused = await client.post("/v1/logs", content=gzip.compress(export(hello)), headers=JSON)
        assert refused.status_code == 401
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, requests_series("preflight")) == 1
    assert metric(metrics, requests_series("accepted")) == 0
    assert metric(metrics, records_series("accepted")) == 0
    assert await topic_end(otlp_settings) == 0


# -- protobuf -------------------------------------------------------------------------------------


def kv(key: str, **value: Any) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


async def test_a_protobuf_export_is_published_as_otlp_json_with_hex_ids(
    otlp_settings: Settings,
) -> None:
    """What OTel SDKs send by default. The published JSON has lowercase hex ids (not the
    base64 of protobuf's generic JSON mapping), integer enums, 64-bit integers as strings;
    records group by span, and those with no ids at all by their `resourceLogs` entry."""
    trace_id, span_a, span_b = bytes(range(0xA0, 0xB0)), b"\x0a" * 8, b"\x0b" * 8
    request = logs_service_pb2.ExportLogsServiceRequest()
    entry = request.resource_logs.add()
    entry.resource.attributes.append(kv("service.name", string_value="checkout"))
    scope = entry.scope_logs.add()
    scope.scope.name, scope.scope.version = "shop.checkout", "2.1"

    def add(n: int, trace: bytes, span: bytes) -> None:
        record = scope.log_records.add(
            time_unix_nano=BASE_NS + n,
            severity_number=logs_pb2.SEVERITY_NUMBER_WARN,
            severity_text="WARN",
            trace_id=trace,
            span_id=span,
        )
        record.body.string_value = f"line {n}"
        record.attributes.extend(
            [
                kv("n", int_value=n),
                kv("ratio", double_value=0.25),
                kv("raw", bytes_value=b"\x00\xff"),
                kv(
                    "tags",
                    array_value=common_pb2.ArrayValue(
                        values=[common_pb2.AnyValue(string_value="x")]
                    ),
                ),
            ]
        )

    for n, (trace_bytes, span) in enumerate(
        [(trace_id, span_a), (trace_id, span_b), (trace_id, span_a), (b"", b""), (b"", b"")]
    ):
        add(n, trace_bytes, span)
    async with running(otlp_settings) as client:
        response = await client.post(
            "/v1/logs", content=request.SerializeToString(), headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 200, response.content
        assert response.headers["content-type"] == "application/x-protobuf"
        answer = logs_service_pb2.ExportLogsServiceResponse.FromString(response.content)
        assert not answer.HasField("partial_success")

    messages = await read_topic(otlp_settings, 3)
    by_lines = {tuple(r["body"]["stringValue"] for r in records_of(m.value)): m for m in messages}
    assert set(by_lines) == {("line 0", "line 2"), ("line 1",), ("line 3", "line 4")}
    assert by_lines["line 0", "line 2"].key == by_lines["line 1",].key == trace_id.hex().encode()
    no_ids = by_lines["line 3", "line 4"]
    assert no_ids.key == item_key(orjson.loads(no_ids.value))
    entry_json = one_entry(by_lines["line 0", "line 2"].value)
    assert entry_json["resource"] == {
        "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]
    }
    [scope_json] = entry_json["scopeLogs"]
    assert scope_json["scope"] == {"name": "shop.checkout", "version": "2.1"}
    first = scope_json["logRecords"][0]
    assert first == {
        "timeUnixNano": str(BASE_NS),
        "severityNumber": 13,
        "severityText": "WARN",
        "body": {"stringValue": "line 0"},
        "attributes": [
            {"key": "n", "value": {"intValue": "0"}},
            {"key": "ratio", "value": {"doubleValue": 0.25}},
            {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
            {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}},
        ],
        "traceId": trace_id.hex(),
        "spanId": span_a.hex(),
    }
    assert "traceId" not in records_of(no_ids.value)[0]


# -- partial success and refusals -----------------------------------------------------------------


async def test_unusable_records_are_rejected_in_partial_success_and_the_rest_published(
    otlp_settings: Settings,
) -> None:
    inv = invocation(1)
    good = invocation_record(inv)
    base64_span = {
        "body": {"stringValue": "base64 ids"},
        "traceId": base64.b64encode(bytes(range(16))).decode(),
        "spanId": base64.b64encode(bytes(range(8))).decode(),
    }
    upper = {"body": {"stringValue": "upper"}, "traceId": "AB" * 16}
    body = export(
        resource_logs(
            [good, 7, {"body": {"stringValue": "bad"}, "traceId": "xyz"}, base64_span, upper]
        )
    )
    bad_proto = logs_service_pb2.ExportLogsServiceRequest()
    scope = bad_proto.resource_logs.add().scope_logs.add()
    scope.log_records.add(trace_id=b"\x01" * 5).body.string_value = "short id"
    scope.log_records.add(trace_id=b"\x02" * 16).body.string_value = "fine"
    async with running(otlp_settings) as client:
        response = await client.post("/v1/logs", content=body, headers={**bearer(), **JSON})
        assert response.status_code == 200, response.text
        partial = response.json()["partialSuccess"]
        assert partial["rejectedLogRecords"] == "2"
        message = partial["errorMessage"]
        assert message.startswith("2 log records rejected: ")
        assert "resourceLogs[0].scopeLogs[0].logRecords[1]: not an object" in message
        assert "logRecords[2]: traceId: expected 16 bytes in hex, got 'xyz'" in message
        response = await client.post(
            "/v1/logs", content=bad_proto.SerializeToString(), headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 200
        answer = logs_service_pb2.ExportLogsServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_log_records == 1
        assert "traceId" in answer.partial_success.error_message
        metrics = (await client.get("/metrics")).text

    messages = await read_topic(otlp_settings, 4)
    bodies = sorted(r["body"]["stringValue"] for m in messages for r in records_of(m.value))
    assert bodies == ["GET https://shop.example.com/items/1?page=2", "base64 ids", "fine", "upper"]
    ids = {
        r["body"]["stringValue"]: (r.get("traceId"), r.get("spanId"))
        for m in messages
        for r in records_of(m.value)
    }
    assert ids["base64 ids"] == (bytes(range(16)).hex(), bytes(range(8)).hex())
    assert ids["upper"] == ("ab" * 16, None)
    assert metric(metrics, requests_series("partial")) == 2
    assert metric(metrics, records_series("rejected")) == 3
    assert metric(metrics, records_series("accepted")) == 4


async def test_refusals_answer_a_google_rpc_status_and_publish_nothing(
    otlp_settings: Settings,
) -> None:
    limit = 64 * 1024
    small = replace(otlp_settings, collect_max_body_bytes=limit)
    good = export(cloudflare_entry(invocation(1)))
    big = export(*(cloudflare_entry(invocation(n)) for n in range(40)))
    assert len(big) > limit
    bomb = gzip.compress(b" " * (8 << 20))
    cases: list[tuple[bytes, dict[str, str], int, int, str]] = [
        (b"{nope", {**bearer(), **JSON}, 400, 3, "body: not JSON"),
        (b"[]", {**bearer(), **JSON}, 400, 3, "body: expected an ExportLogsServiceRequest"),
        (b'{"resourceLogs": {}}', {**bearer(), **JSON}, 400, 3, "body: resourceLogs: expected"),
        (b'{"resourceLogs": [1]}', {**bearer(), **JSON}, 400, 3, "body: resourceLogs[0]: expected"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": "x"}]}]}',
            {**bearer(), **JSON},
            400,
            3,
            "body: resourceLogs[0].scopeLogs[0].logRecords: expected an array",
        ),
        (gzip.compress(good)[:-9], {**bearer(), **JSON}, 400, 3, "body: the gzip stream"),
        (good, {**JSON}, 401, 16, "missing or unknown token"),
        (good, {**bearer("wrong"), **JSON}, 401, 16, "missing or unknown token"),
        (good, {SECRET_HEADER: "wrong", **JSON}, 401, 16, "missing or unknown token"),
        (big, {**bearer(), **JSON}, 413, 8, "body: Content-Length exceeds"),
        (bomb, {**bearer(), **JSON, "Content-Encoding": "gzip"}, 413, 8, "body: the decompressed"),
        (good, {**bearer(), "Content-Type": "text/plain"}, 415, 3, "Content-Type: 'text/plain'"),
        (good, bearer(), 415, 3, "Content-Type: ''"),
        (good, {**bearer(), **JSON, "Content-Encoding": "br"}, 415, 3, "Content-Encoding: 'br'"),
    ]
    async with running(small) as client:
        for content, headers, status, code, message in cases:
            response = await client.post("/v1/logs", content=content, headers=headers)
            assert response.status_code == status, (headers, response.text)
            assert response.headers["content-type"] == "application/json"
            answer = response.json()
            assert answer["code"] == code, answer
            assert answer["message"].startswith(message), answer
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"
        # A protobuf request is answered in protobuf.
        response = await client.post(
            "/v1/logs", content=b"\xff\xff\xff\xff", headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/x-protobuf"
        status_message = status_pb2.Status.FromString(response.content)
        assert status_message.code == 3
        assert status_message.message.startswith("body: not an OTLP protobuf export")
        response = await client.post("/v1/logs", content=b"", headers=PROTOBUF)
        assert response.status_code == 401
        assert status_pb2.Status.FromString(response.content).code == 16
        # A protobuf export with nothing in it is a success that publishes nothing.
        response = await client.post("/v1/logs", content=b"", headers={**bearer(), **PROTOBUF})
        assert (response.status_code, response.content) == (200, b"")
        assert (await client.get("/v1/logs")).status_code == 405
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, requests_series("refused")) == len(cases) + 2
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="unauthorized"}') == 4
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="too_large"}') == 2
    assert await topic_end(otlp_settings) == 0


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The collector on a free port, serving though Kafka never answered."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            async def up() -> bool:
                if task.done():
                    task.result()
                    pytest.fail("the collector stopped during start-up")
                return server.started

            await eventually(up, 30, "collector serving")
            yield client
    finally:
        server.should_exit = True
        await task


async def test_kafka_unreachable_answers_503_with_retry_after(settings: Settings) -> None:
    """OTLP clients retry a 503 after `Retry-After`; they must get it at once, not a hang."""
    down = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}", collect_tokens=(TOKEN,))
    body = export(cloudflare_entry(invocation(1)))
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    async with started(down) as client:
        response = await client.post("/v1/logs", content=body, headers={**bearer(), **JSON})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        answer = response.json()
        assert answer["code"] == 14
        assert answer["message"].startswith("Kafka unavailable, retry later")
        response = await client.post(
            "/v1/logs", content=request.SerializeToString(), headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert status_pb2.Status.FromString(response.content).code == 14
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, requests_series("unavailable")) == 2
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="unavailable"}') == 2


# -- a real client: the OpenTelemetry Python SDK --------------------------------------------------


@dataclass(frozen=True)
class Given:
    """One log record handed to the SDK."""

    body: Any
    severity: SeverityNumber
    attributes: dict[str, Any]
    span: tuple[int, int] | None
    timestamp: int


class Recording(LogRecordExporter):
    """The SDK's OTLP exporter, with the result of each export kept."""

    def __init__(self, inner: OTLPLogExporter) -> None:
        self.inner = inner
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def export_with_sdk(endpoint: str, given: list[Given]) -> list[LogRecordExportResult]:
    """Hand `given` to the SDK and let its OTLP/HTTP exporter (protobuf, gzip) deliver them.

    Blocking (the exporter uses `requests`): runs in a thread beside the collector's loop."""
    exporter = Recording(
        OTLPLogExporter(
            endpoint=endpoint,
            headers={"Authorization": f"Bearer {TOKEN}"},
            compression=Compression.Gzip,
            timeout=30,
        )
    )
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "otel-roundtrip", "deployment.environment": "ci"})
    )
    # One export for all: no timer fires during the test, and the batch is under the cap.
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, schedule_delay_millis=600_000)
    )
    logger = provider.get_logger("tests.roundtrip", "1.0")
    for record in given:
        context = None
        if record.span is not None:
            span = SpanContext(*record.span, is_remote=False, trace_flags=TraceFlags(1))
            context = trace.set_span_in_context(NonRecordingSpan(span))
        logger.emit(
            timestamp=record.timestamp,
            context=context,
            severity_number=record.severity,
            body=record.body,
            attributes=record.attributes,
        )
    provider.force_flush()
    provider.shutdown()
    return exporter.results


def python_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as the Python value an SDK user gave."""
    [(kind, inner)] = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [python_value(v) for v in inner.get("values", [])]
    if kind == "kvlistValue":
        return {x["key"]: python_value(x["value"]) for x in inner.get("values", [])}
    if kind == "bytesValue":
        return base64.b64decode(inner)
    return inner


async def test_the_opentelemetry_sdk_round_trips_every_record_exactly_once(
    otlp_settings: Settings,
) -> None:
    """The OpenTelemetry Python SDK's OTLP/HTTP exporter (protobuf, gzip) sends what it was
    given to a running collector; the topic then holds exactly those records, once each, with
    hex ids, grouped by span, under the SDK's resource and scope."""
    spans = [(uuid.uuid4().int, uuid.uuid4().int >> 64) for _ in range(3)]
    given: list[Given] = []
    for s, span in enumerate(spans):
        for n in range(4):
            given.append(
                Given(
                    body=f"span {s} line {n}" if n % 2 else {"event": "step", "n": n, "ok": True},
                    severity=SeverityNumber.INFO if n < 3 else SeverityNumber.ERROR,
                    attributes={"span.index": s, "line": n, "ratio": n / 4, "tags": ["a", "b"]},
                    span=span,
                    timestamp=BASE_NS + 1000 * len(given),
                )
            )
    for n in range(3):
        given.append(
            Given(
                body=f"outside any span {n}",
                severity=SeverityNumber.WARN,
                attributes={"line": n, "raw": b"\x01\x02"},
                span=None,
                timestamp=BASE_NS + 1000 * len(given),
            )
        )
    async with running(otlp_settings) as client:
        endpoint = str(client.base_url.join("/v1/logs"))
        results = await asyncio.to_thread(export_with_sdk, endpoint, given)
        assert results == [LogRecordExportResult.SUCCESS]
        metrics = (await client.get("/metrics")).text

    messages = await read_topic(otlp_settings, len(spans) + 1)
    seen: list[Given] = []
    for message in messages:
        entry = one_entry(message.value)
        resource = {x["key"]: python_value(x["value"]) for x in entry["resource"]["attributes"]}
        assert resource["service.name"] == "otel-roundtrip"
        assert resource["telemetry.sdk.language"] == "python"
        [scope] = entry["scopeLogs"]
        assert scope["scope"]["name"] == "tests.roundtrip"
        ids = {(r.get("traceId"), r.get("spanId")) for r in scope["logRecords"]}
        assert len(ids) == 1  # one group per message
        [(trace_hex, span_hex)] = ids
        if trace_hex is None:
            assert message.key == item_key(orjson.loads(message.value))
        else:
            assert message.key == trace_hex.encode()
            assert trace_hex == f"{int(trace_hex, 16):032x}"  # lowercase hex, not base64
            assert span_hex == f"{int(span_hex, 16):016x}"
        for record in scope["logRecords"]:
            ids_given = None if trace_hex is None else (int(trace_hex, 16), int(span_hex, 16))
            seen.append(
                Given(
                    body=python_value(record["body"]),
                    severity=SeverityNumber(record["severityNumber"]),
                    attributes={x["key"]: python_value(x["value"]) for x in record["attributes"]},
                    span=ids_given,
                    timestamp=int(record["timeUnixNano"]),
                )
            )
    assert sorted(seen, key=lambda g: g.timestamp) == given
    assert metric(metrics, records_series("accepted")) == len(given) == 15


# -- a group larger than a Kafka message ----------------------------------------------------------


def test_a_group_larger_than_a_kafka_message_is_split_under_one_key() -> None:
    inv = invocation(1)
    line = "x" * 300_000
    records = [invocation_record(inv)] + [console_record(inv, n, line, ids=False) for n in range(6)]
    records.append(console_record(inv, 99, "y" * (MAX_ITEM_BYTES + 10), ids=False))
    result = otlp_logs.split(orjson.loads(export(resource_logs(records))))
    assert result.rejected == 1
    assert "a Kafka message takes at most" in result.error_message()
    assert len(result.items) == 2  # three lines of 300 kB per message, with the invocation's
    assert {item.key for item in result.items} == {inv.trace_id.encode()}
    assert all(len(item.value) <= MAX_ITEM_BYTES for item in result.items)
    published = [r for item in result.items for r in records_of(item.value)]
    assert published == records[:-1]
    assert result.records == len(records) - 1


def test_an_invocations_logs_and_its_trace_share_a_key() -> None:
    """Its logs message and its spans' messages land on one partition: the replica reading it
    completes the invocation with its root span in the flush (pipeline/postgres/completion.py),
    which only a reader of both halves, in order, can do exactly once."""
    fixtures = ROOT / "tests" / "fixtures" / "otlp"
    logs = otlp_logs.split(orjson.loads((fixtures / "cloudflare_fetch.json").read_bytes()))
    spans = otlp_traces.split(orjson.loads((fixtures / "cloudflare_trace.json").read_bytes()))
    assert {item.key for item in logs.items} == {item.key for item in spans.items}
    assert {item.key for item in logs.items} == {b"4bf92f3577b34da6a3ce929d0e0e4736"}
