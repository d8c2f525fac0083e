"""`POST /v1/traces`, the OTLP/HTTP traces receiver, over real HTTP against the real Kafka.

JSON exports are written as Workers Observability and OTLP/JSON write them (hex ids, integers
as numbers or strings); protobuf exports are built with the `opentelemetry-proto` classes; and
a real client nobody here wrote, the OpenTelemetry Python SDK with its OTLP/HTTP protobuf
exporter, exports a small trace to a running collector. Every message is read back from the
topic: one `resourceSpans` entry, the spans of one trace, OTLP/JSON with lowercase hex ids,
keyed by the trace id.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from pipeline.collector.items import MAX_ITEM_BYTES
from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.collector.test_collect import PARTITIONS, TOKEN, bearer, read_topic, running, topic_end
from tests.collector.test_otlp_logs import (
    BASE_NS,
    JSON,
    PROTOBUF,
    SECRET_HEADER,
    attr,
    cloudflare_resource,
    kv,
    metric,
    started,
)
from tests.conftest import free_port

ROUTE = "/v1/traces"


@pytest.fixture
async def traces_settings(settings: Settings) -> Settings:
    await ensure_topics(settings, {settings.topic: PARTITIONS})
    return replace(settings, collect_tokens=(TOKEN,), collect_secret_header=SECRET_HEADER)


# -- payloads -------------------------------------------------------------------------------------


def trace_id() -> str:
    return uuid.uuid4().hex


def span_id() -> str:
    return uuid.uuid4().hex[:16]


def span(
    trace: str, span_hex: str, name: str, parent: str = "", n: int = 0, **extra: Any
) -> dict[str, Any]:
    """A span as OTLP/JSON writes it (Cloudflare's integers as numbers)."""
    value: dict[str, Any] = {
        "traceId": trace,
        "spanId": span_hex,
        "name": name,
        "kind": 2 if not parent else 3,
        "startTimeUnixNano": str(BASE_NS + n * 1_000_000),
        "endTimeUnixNano": str(BASE_NS + n * 1_000_000 + 750_000),
        "attributes": [attr("cloudflare.invocation.sequence.number", n + 1)],
        "status": {"code": 1},
        **extra,
    }
    if parent:
        value["parentSpanId"] = parent
    return value


def resource_spans(
    spans: list[Any], resource: dict[str, Any] | None = None, scope: str = "workers-observability"
) -> dict[str, Any]:
    return {
        "resource": cloudflare_resource() if resource is None else resource,
        "scopeSpans": [{"scope": {"name": scope}, "spans": spans}],
        "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
    }


def export(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": list(entries)})


def one_entry(value: bytes) -> dict[str, Any]:
    """The only `resourceSpans` entry of a published message."""
    document = orjson.loads(value)
    assert list(document) == ["resourceSpans"]
    [entry] = document["resourceSpans"]
    assert isinstance(entry, dict)
    return entry


def spans_of(value: bytes) -> list[dict[str, Any]]:
    return [s for scope in one_entry(value)["scopeSpans"] for s in scope["spans"]]


def requests_series(outcome: str) -> str:
    return f'tailpipe_collect_otlp_requests_total{{outcome="{outcome}",route="{ROUTE}"}}'


def records_series(result: str) -> str:
    return f'tailpipe_collect_otlp_records_total{{result="{result}",route="{ROUTE}"}}'


def lowered(value: dict[str, Any]) -> dict[str, Any]:
    """A span as published: its ids in lowercase hex."""
    out = dict(value)
    for name in ("traceId", "spanId", "parentSpanId"):
        if name in out:
            out[name] = out[name].lower()
    return out


# -- JSON -----------------------------------------------------------------------------------------


async def test_json_exports_become_one_message_per_entry_and_trace_keyed_by_trace_id(
    traces_settings: Settings,
) -> None:
    """Spans of several traces, resources and scopes, plain and gzip'd JSON: each (resource
    entry, trace) becomes one message keyed by the trace id, holding its spans as sent under
    their own resource and scopes, ids in lowercase hex; a trace's spans that come in another
    request, or from another service, get the same key and so the same partition."""
    t1, t2, t3 = trace_id(), trace_id(), trace_id()
    root1, root2 = span_id(), span_id()
    shop = resource_spans(
        [
            span(t1, root1, "GET /cart"),
            span(t2, root2, "GET /items"),
            span(t1, span_id(), "kv_get", parent=root1, n=1),
        ]
    )
    # A second scope of the same entry, its ids in uppercase hex: it joins t1's message.
    custom = span(t1.upper(), span_id().upper(), "price", parent=root1.upper(), n=2)
    shop["scopeSpans"].append({"scope": {"name": "custom", "version": "1.0"}, "spans": [custom]})
    other_resource = {"attributes": [attr("service.name", "inventory")]}
    b64_span = base64.b64encode(bytes.fromhex(root1)).decode()
    inventory = resource_spans(
        [
            span(base64.b64encode(bytes.fromhex(t1)).decode(), span_id(), "lookup", b64_span),
            span(t3, span_id(), "reindex", n=3, status={"code": 2, "message": "stale"}),
        ],
        other_resource,
        scope="inventory.db",
    )
    later = resource_spans([span(t2, span_id(), "d1_all", parent=root2, n=4)])
    async with running(traces_settings) as client:
        response = await client.post(
            ROUTE, content=export(shop, inventory), headers={**bearer(), **JSON}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {}  # full success: no partialSuccess
        destination = {SECRET_HEADER: TOKEN, "Content-Encoding": "gzip", **JSON}
        response = await client.post(
            ROUTE, content=gzip.compress(export(later)), headers=destination
        )
        assert (response.status_code, response.json()) == (200, {}), response.text
        metrics = (await client.get("/metrics")).text

    records = await read_topic(traces_settings, 5)
    by_key: dict[bytes | None, list[Any]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)
    assert {key: len(found) for key, found in by_key.items()} == {
        t1.encode(): 2,  # the shop's and the inventory's
        t2.encode(): 2,  # both requests
        t3.encode(): 1,
    }
    for key, found in by_key.items():
        assert key is not None
        assert len({r.partition for r in found}) == 1, key
        for record in found:
            assert {s["traceId"] for s in spans_of(record.value)} == {key.decode()}

    def message(key: str, resource: dict[str, Any]) -> dict[str, Any]:
        entries = [one_entry(r.value) for r in by_key[key.encode()]]
        [entry] = [e for e in entries if e["resource"] == resource]
        return entry

    shop_t1 = message(t1, shop["resource"])
    assert shop_t1["schemaUrl"] == shop["schemaUrl"]
    assert [scope["scope"] for scope in shop_t1["scopeSpans"]] == [
        {"name": "workers-observability"},
        {"name": "custom", "version": "1.0"},
    ]
    assert [s["name"] for s in shop_t1["scopeSpans"][0]["spans"]] == ["GET /cart", "kv_get"]
    assert shop_t1["scopeSpans"][1]["spans"] == [lowered(custom)]
    assert shop_t1["scopeSpans"][0]["spans"][0] == shop["scopeSpans"][0]["spans"][0]
    inventory_t1 = message(t1, other_resource)
    [lookup] = inventory_t1["scopeSpans"][0]["spans"]
    assert (lookup["traceId"], lookup["parentSpanId"]) == (t1, root1)  # base64 read, hex written
    assert b'"intValue":1' in by_key[t2.encode()][0].value  # integers as sent
    published_t2 = [s["name"] for r in by_key[t2.encode()] for s in spans_of(r.value)]
    assert sorted(published_t2) == ["GET /items", "d1_all"]
    assert metric(metrics, requests_series("accepted")) == 2
    assert metric(metrics, records_series("accepted")) == 7
    assert metric(metrics, records_series("rejected")) == 0
    assert metric(metrics, f'tailpipe_collect_items_total{{route="{ROUTE}"}}') == 5
    assert metric(metrics, f'tailpipe_collect_bytes_total{{route="{ROUTE}"}}') > 0


# -- protobuf -------------------------------------------------------------------------------------


async def test_a_protobuf_export_is_published_as_otlp_json_with_hex_ids(
    traces_settings: Settings,
) -> None:
    """What OTel SDKs send by default. The published JSON has lowercase hex ids for the span,
    its parent and its links (not the base64 of protobuf's generic JSON mapping), integer
    enums, 64-bit integers as strings; the answer is protobuf."""
    trace, other = bytes(range(0xA0, 0xB0)), bytes(range(0x10, 0x20))
    root, child, linked = b"\x0a" * 8, b"\x0b" * 8, b"\x0c" * 8
    request = trace_service_pb2.ExportTraceServiceRequest()
    entry = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    entry.resource.attributes.append(kv("service.name", string_value="checkout"))
    scope = entry.scope_spans.add()
    scope.scope.name, scope.scope.version = "shop.checkout", "2.1"
    parent = scope.spans.add(
        trace_id=trace,
        span_id=root,
        name="POST /checkout",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=BASE_NS,
        end_time_unix_nano=BASE_NS + 9_000_000,
    )
    parent.attributes.extend([kv("http.response.status_code", int_value=500)])
    parent.status.code, parent.status.message = trace_pb2.Status.STATUS_CODE_ERROR, "declined"
    event = parent.events.add(time_unix_nano=BASE_NS + 1_000, name="retry")
    event.attributes.append(kv("attempt", int_value=2))
    link = parent.links.add(trace_id=other, span_id=linked, trace_state="vendor=1")
    link.attributes.append(kv("link.reason", string_value="enqueued-by"))
    scope.spans.add(
        trace_id=trace,
        span_id=child,
        parent_span_id=root,
        name="charge",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=BASE_NS + 2_000,
        end_time_unix_nano=BASE_NS + 8_000_000,
    )
    scope.spans.add(
        trace_id=other, span_id=linked, name="enqueue", start_time_unix_nano=BASE_NS + 5_000
    )
    async with running(traces_settings) as client:
        response = await client.post(
            ROUTE, content=request.SerializeToString(), headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 200, response.content
        assert response.headers["content-type"] == "application/x-protobuf"
        answer = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
        assert not answer.HasField("partial_success")

    messages = {m.key: m for m in await read_topic(traces_settings, 2)}
    assert set(messages) == {trace.hex().encode(), other.hex().encode()}
    entry_json = one_entry(messages[trace.hex().encode()].value)
    assert entry_json["resource"] == {
        "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]
    }
    assert entry_json["schemaUrl"] == "https://opentelemetry.io/schemas/1.26.0"
    [scope_json] = entry_json["scopeSpans"]
    assert scope_json["scope"] == {"name": "shop.checkout", "version": "2.1"}
    assert scope_json["spans"] == [
        {
            "traceId": trace.hex(),
            "spanId": root.hex(),
            "name": "POST /checkout",
            "kind": 2,
            "startTimeUnixNano": str(BASE_NS),
            "endTimeUnixNano": str(BASE_NS + 9_000_000),
            "attributes": [{"key": "http.response.status_code", "value": {"intValue": "500"}}],
            "events": [
                {
                    "timeUnixNano": str(BASE_NS + 1_000),
                    "name": "retry",
                    "attributes": [{"key": "attempt", "value": {"intValue": "2"}}],
                }
            ],
            "links": [
                {
                    "traceId": other.hex(),
                    "spanId": linked.hex(),
                    "traceState": "vendor=1",
                    "attributes": [{"key": "link.reason", "value": {"stringValue": "enqueued-by"}}],
                }
            ],
            "status": {"code": 2, "message": "declined"},
        },
        {
            "traceId": trace.hex(),
            "spanId": child.hex(),
            "parentSpanId": root.hex(),
            "name": "charge",
            "kind": 3,
            "startTimeUnixNano": str(BASE_NS + 2_000),
            "endTimeUnixNano": str(BASE_NS + 8_000_000),
        },
    ]
    assert spans_of(messages[other.hex().encode()].value) == [
        {
            "traceId": other.hex(),
            "spanId": linked.hex(),
            "name": "enqueue",
            "startTimeUnixNano": str(BASE_NS + 5_000),
        }
    ]


# -- partial success and refusals -----------------------------------------------------------------


async def test_unusable_spans_are_rejected_in_partial_success_and_the_rest_published(
    traces_settings: Settings,
) -> None:
    """Each reason a span is rejected, counted in `rejectedSpans` (which the client must not
    retry), the first three described; the good spans of the same request are published."""
    trace = trace_id()
    good = span(trace, span_id(), "good")
    bad: list[Any] = [
        "not an object",
        {**good, "traceId": ""},
        {k: v for k, v in good.items() if k != "spanId"},
        {**good, "traceId": "0" * 32},
        {**good, "spanId": "0" * 16},
        {**good, "traceId": "xyz"},
        {**good, "spanId": "ab" * 4},  # 4 bytes, not 8
        {**good, "parentSpanId": "not an id"},
        {**good, "links": [{"traceId": "12", "spanId": span_id()}]},
        # What the consumer's decoder would refuse, so its message's other spans with it:
        {k: v for k, v in good.items() if k != "startTimeUnixNano"},
        {**good, "attributes": [{"key": "rows", "value": {"intValue": "many"}}]},
    ]
    root_without_parent = {**span(trace, span_id(), "root"), "parentSpanId": ""}
    body = export(resource_spans([good, *bad, root_without_parent]))
    bad_proto = trace_service_pb2.ExportTraceServiceRequest()
    scope = bad_proto.resource_spans.add().scope_spans.add()
    scope.spans.add(trace_id=b"\x01" * 5, span_id=b"\x02" * 8, name="short trace id")
    scope.spans.add(trace_id=b"\x01" * 16, name="no span id")
    scope.spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x03" * 8, name="fine", start_time_unix_nano=BASE_NS
    )
    async with running(traces_settings) as client:
        response = await client.post(ROUTE, content=body, headers={**bearer(), **JSON})
        assert response.status_code == 200, response.text
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == str(len(bad))
        message = partial["errorMessage"]
        assert message.startswith(f"{len(bad)} spans rejected: ")
        path = "resourceSpans[0].scopeSpans[0].spans"
        assert f"{path}[1]: not an object; " in message
        assert f"{path}[2]: traceId: missing; OTLP requires one on every span; " in message
        assert f"{path}[3]: spanId: missing" in message
        assert message.endswith(f"; and {len(bad) - 3} more")
        response = await client.post(
            ROUTE, content=bad_proto.SerializeToString(), headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 200
        answer = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 2
        assert "traceId: expected 16 bytes in hex" in answer.partial_success.error_message
        assert "spanId: missing" in answer.partial_success.error_message
        metrics = (await client.get("/metrics")).text

    messages = await read_topic(traces_settings, 2)
    names = sorted(s["name"] for m in messages for s in spans_of(m.value))
    assert names == ["fine", "good", "root"]
    assert metric(metrics, requests_series("partial")) == 2
    assert metric(metrics, records_series("rejected")) == len(bad) + 2
    assert metric(metrics, records_series("accepted")) == 3


async def test_refusals_answer_a_google_rpc_status_and_publish_nothing(
    traces_settings: Settings,
) -> None:
    limit = 64 * 1024
    small = replace(traces_settings, collect_max_body_bytes=limit)
    good = export(resource_spans([span(trace_id(), span_id(), "x")]))
    big = export(resource_spans([span(trace_id(), span_id(), "x" * 1000) for _ in range(80)]))
    assert len(big) > limit
    bomb = gzip.compress(b" " * (8 << 20))
    auth_json = {**bearer(), **JSON}
    cases: list[tuple[bytes, dict[str, str], int, int, str]] = [
        (b"{nope", auth_json, 400, 3, "body: not JSON"),
        (b"[]", auth_json, 400, 3, "body: expected an ExportTraceServiceRequest (a JSON object)"),
        (b'{"resourceSpans": {}}', auth_json, 400, 3, "body: resourceSpans: expected an array"),
        (b'{"resourceSpans": [1]}', auth_json, 400, 3, "body: resourceSpans[0]: expected an"),
        (
            b'{"resourceSpans": [{"scopeSpans": "x"}]}',
            auth_json,
            400,
            3,
            "body: resourceSpans[0].scopeSpans: expected an array, got a string",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [null]}]}',
            auth_json,
            400,
            3,
            "body: resourceSpans[0].scopeSpans[0]: expected an object, got null",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]}',
            auth_json,
            400,
            3,
            "body: resourceSpans[0].scopeSpans[0].spans: expected an array, got an object",
        ),
        (gzip.compress(good)[:-9], auth_json, 400, 3, "body: the gzip stream"),
        (good, JSON, 401, 16, "missing or unknown token"),
        (good, {**bearer("wrong"), **JSON}, 401, 16, "missing or unknown token"),
        (good, {SECRET_HEADER: "wrong", **JSON}, 401, 16, "missing or unknown token"),
        (big, auth_json, 413, 8, "body: Content-Length exceeds"),
        (bomb, {**auth_json, "Content-Encoding": "gzip"}, 413, 8, "body: the decompressed"),
        (good, {**bearer(), "Content-Type": "text/plain"}, 415, 3, "Content-Type: 'text/plain'"),
        (good, bearer(), 415, 3, "Content-Type: ''"),
        (good, {**auth_json, "Content-Encoding": "br"}, 415, 3, "Content-Encoding: 'br'"),
    ]
    async with running(small) as client:
        for content, headers, status, code, message in cases:
            response = await client.post(ROUTE, content=content, headers=headers)
            assert response.status_code == status, (headers, response.text)
            assert response.headers["content-type"] == "application/json"
            answer = response.json()
            assert answer["code"] == code, answer
            assert answer["message"].startswith(message), answer
            if status == 401:
                assert response.headers["www-authenticate"] == "Bearer"
        # A protobuf request is answered in protobuf.
        response = await client.post(
            ROUTE, content=b"\xff\xff\xff\xff", headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/x-protobuf"
        status_message = status_pb2.Status.FromString(response.content)
        assert status_message.code == 3
        assert status_message.message.startswith("body: not an OTLP protobuf export")
        response = await client.post(ROUTE, content=b"", headers=PROTOBUF)
        assert response.status_code == 401
        assert status_pb2.Status.FromString(response.content).code == 16
        # A protobuf export with nothing in it is a success that publishes nothing.
        response = await client.post(ROUTE, content=b"", headers={**bearer(), **PROTOBUF})
        assert (response.status_code, response.content) == (200, b"")
        assert (await client.get(ROUTE)).status_code == 405
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, requests_series("refused")) == len(cases) + 2
    assert metric(metrics, requests_series("accepted")) == 1
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="unauthorized"}') == 4
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="too_large"}') == 2
    malformed = 9 + 3  # the 400s (the protobuf one too) and the 415s
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="malformed"}') == malformed
    assert await topic_end(traces_settings) == 0


async def test_a_cloudflare_export_without_spans_is_answered_as_a_preflight(
    traces_settings: Settings,
) -> None:
    """Cloudflare checks a destination with a logs preflight; should it check a traces one,
    an export of its own service with no spans gets a 200 and publishes nothing."""
    hello = {
        "resource": {"attributes": [attr("service.name", "cloudflare-workers-observability")]},
        "scopeSpans": [{"scope": {"name": "workers-observability"}, "spans": []}],
    }
    headers = {SECRET_HEADER: TOKEN, "Content-Encoding": "gzip", **JSON}
    async with running(traces_settings) as client:
        response = await client.post(ROUTE, content=gzip.compress(export(hello)), headers=headers)
        assert (response.status_code, response.json()) == (200, {}), response.text
        refused = await client.post(ROUTE, content=export(hello), headers=JSON)
        assert refused.status_code == 401
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, requests_series("preflight")) == 1
    assert metric(metrics, requests_series("accepted")) == 0
    assert await topic_end(traces_settings) == 0


async def test_kafka_unreachable_answers_503_with_retry_after(settings: Settings) -> None:
    """OTLP clients retry a 503 after `Retry-After`; they must get it at once, not a hang."""
    down = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}", collect_tokens=(TOKEN,))
    body = export(resource_spans([span(trace_id(), span_id(), "x")]))
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="x", start_time_unix_nano=BASE_NS
    )
    async with started(down) as client:
        response = await client.post(ROUTE, content=body, headers={**bearer(), **JSON})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        answer = response.json()
        assert answer["code"] == 14
        assert answer["message"].startswith("Kafka unavailable, retry later")
        response = await client.post(
            ROUTE, content=request.SerializeToString(), headers={**bearer(), **PROTOBUF}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert status_pb2.Status.FromString(response.content).code == 14
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, requests_series("unavailable")) == 2
    assert metric(metrics, 'tailpipe_collect_rejects_total{reason="unavailable"}') == 2


# -- a trace larger than a Kafka message ----------------------------------------------------------


async def test_a_trace_larger_than_a_kafka_message_is_split_under_one_key(
    traces_settings: Settings,
) -> None:
    """Three spans of 400 kB in one trace take two messages with the trace's key, on one
    partition; a span that alone exceeds a Kafka message is rejected, its trace's others kept."""
    trace, root = trace_id(), span_id()
    payload = "x" * 400_000
    spans = [span(trace, root, "root")] + [
        span(trace, span_id(), f"big {n}", parent=root, n=n, events=[{"name": payload}])
        for n in range(1, 4)
    ]
    huge = span(trace, span_id(), "huge", parent=root, events=[{"name": "y" * MAX_ITEM_BYTES}])
    async with running(traces_settings) as client:
        response = await client.post(
            ROUTE, content=export(resource_spans([*spans, huge])), headers={**bearer(), **JSON}
        )
        assert response.status_code == 200, response.text
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "1"
        assert "a span of group" in partial["errorMessage"]
        assert "a Kafka message takes at most" in partial["errorMessage"]

    messages = await read_topic(traces_settings, 2)
    assert {m.key for m in messages} == {trace.encode()}
    assert len({m.partition for m in messages}) == 1
    assert all(len(m.value) <= MAX_ITEM_BYTES for m in messages)
    ordered = sorted(messages, key=lambda m: m.offset)
    assert [s for m in ordered for s in spans_of(m.value)] == spans


# -- a real client: the OpenTelemetry Python SDK --------------------------------------------------


class Recording(SpanExporter):
    """The SDK's OTLP exporter, with what it was given and the result of each export kept."""

    def __init__(self, inner: OTLPSpanExporter) -> None:
        self.inner = inner
        self.spans: list[ReadableSpan] = []
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def trace_with_sdk(endpoint: str) -> Recording:
    """A checkout as an instrumented service traces it, exported by the SDK's OTLP/HTTP
    exporter (protobuf, gzip) in three requests: an enqueue span of another trace; the
    checkout's two children (one linked to the enqueue, failed, with an event); then the
    checkout itself, so one trace's spans come in two requests.

    Blocking (the exporter uses `requests`): runs in a thread beside the collector's loop."""
    exporter = Recording(
        OTLPSpanExporter(
            endpoint=endpoint,
            headers={"Authorization": f"Bearer {TOKEN}"},
            compression=Compression.Gzip,
            timeout=30,
        )
    )
    provider = TracerProvider(
        resource=Resource.create({"service.name": "otel-roundtrip", "deployment.environment": "ci"})
    )
    # No timer fires during the test: each export is a force_flush below.
    processor = BatchSpanProcessor(exporter, schedule_delay_millis=600_000)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.roundtrip", "1.0")
    with tracer.start_as_current_span("enqueue", kind=SpanKind.PRODUCER) as enqueue:
        enqueue.set_attribute("queue.name", "orders")
    processor.force_flush()
    checkout = tracer.start_span(
        "POST /checkout", kind=SpanKind.SERVER, attributes={"http.method": "POST", "items": 3}
    )
    with tracer.start_as_current_span(
        "load cart",
        context=set_span_in_context(checkout),
        attributes={"cart.size": 3, "ratio": 0.5},
    ):
        pass
    with tracer.start_as_current_span(
        "charge card",
        context=set_span_in_context(checkout),
        kind=SpanKind.CLIENT,
        links=[Link(enqueue.get_span_context(), {"link.reason": "enqueued-by"})],
        record_exception=False,
        set_status_on_exception=False,
    ) as charge:
        charge.add_event("retry", {"attempt": 2, "tags": ["card", "declined"]})
        charge.set_status(Status(StatusCode.ERROR, "card declined"))
    processor.force_flush()
    checkout.set_status(Status(StatusCode.ERROR, "payment failed"))
    checkout.end()
    processor.force_flush()
    provider.shutdown()
    return exporter


async def test_the_opentelemetry_sdk_s_spans_are_published_exactly_once_with_their_links(
    traces_settings: Settings,
) -> None:
    async with running(traces_settings) as client:
        endpoint = str(client.base_url.join(ROUTE))
        exporter = await asyncio.to_thread(trace_with_sdk, endpoint)
        assert exporter.results == [SpanExportResult.SUCCESS] * 3
        metrics = (await client.get("/metrics")).text
    given = {(s.context.trace_id, s.context.span_id): s for s in exporter.spans}
    assert len(given) == 4
    [enqueue_span] = [s for s in exporter.spans if s.name == "enqueue"]
    enqueue = (f"{enqueue_span.context.trace_id:032x}", f"{enqueue_span.context.span_id:016x}")

    messages = await read_topic(traces_settings, 3)
    published: list[tuple[int, int]] = []
    partitions: dict[bytes | None, set[int]] = {}
    for message in messages:
        entry = one_entry(message.value)
        resource = {a["key"]: a["value"] for a in entry["resource"]["attributes"]}
        assert resource["service.name"] == {"stringValue": "otel-roundtrip"}
        assert resource["telemetry.sdk.language"] == {"stringValue": "python"}
        [scope] = entry["scopeSpans"]
        assert scope["scope"] == {"name": "tests.roundtrip", "version": "1.0"}
        partitions.setdefault(message.key, set()).add(message.partition)
        for value in scope["spans"]:
            assert message.key == value["traceId"].encode()
            ids = (int(value["traceId"], 16), int(value["spanId"], 16))
            published.append(ids)
            sent = given[ids]
            assert value["traceId"] == f"{sent.context.trace_id:032x}"  # lowercase hex
            assert value["spanId"] == f"{sent.context.span_id:016x}"
            assert value["name"] == sent.name
            parent = sent.parent
            assert value.get("parentSpanId") == (
                None if parent is None else f"{parent.span_id:016x}"
            )
            assert int(value["startTimeUnixNano"]) == sent.start_time
            assert value["kind"] == sent.kind.value + 1  # OTLP's enum counts UNSPECIFIED as 0
            _check_details(value, enqueue)
    assert sorted(published) == sorted(given)  # every span, exactly once
    assert all(len(found) == 1 for found in partitions.values())  # one trace, one partition
    checkout_trace = next(s.context.trace_id for s in exporter.spans if s.name == "POST /checkout")
    assert sum(m.key == f"{checkout_trace:032x}".encode() for m in messages) == 2
    assert metric(metrics, records_series("accepted")) == 4
    assert metric(metrics, requests_series("accepted")) == 3


def _check_details(value: dict[str, Any], enqueue: tuple[str, str]) -> None:
    """What the SDK was given, as OTLP/JSON: attributes, the event, the link, the status."""
    attributes = {a["key"]: a["value"] for a in value.get("attributes", [])}
    if value["name"] == "POST /checkout":
        assert attributes == {"http.method": {"stringValue": "POST"}, "items": {"intValue": "3"}}
        assert value["status"] == {"code": 2, "message": "payment failed"}
        assert "parentSpanId" not in value
    elif value["name"] == "load cart":
        assert attributes == {"cart.size": {"intValue": "3"}, "ratio": {"doubleValue": 0.5}}
    elif value["name"] == "charge card":
        [event] = value["events"]
        assert event["name"] == "retry"
        assert event["attributes"] == [
            {"key": "attempt", "value": {"intValue": "2"}},
            {
                "key": "tags",
                "value": {
                    "arrayValue": {"values": [{"stringValue": "card"}, {"stringValue": "declined"}]}
                },
            },
        ]
        [link] = value["links"]
        assert link["attributes"] == [
            {"key": "link.reason", "value": {"stringValue": "enqueued-by"}}
        ]
        assert (link["traceId"], link["spanId"]) == enqueue  # hex, as the SDK gave them
        assert value["status"] == {"code": 2, "message": "card declined"}
    else:
        assert value["name"] == "enqueue"
        assert attributes == {"queue.name": {"stringValue": "orders"}}
