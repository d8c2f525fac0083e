"""OTLP traces: spans decoded from Cloudflare's traces export and from any OTel SDK's, the
value forms (enums as numbers and names, times as numbers and strings), the rows and
per-operation rollup they become, redaction, and errors that name the field. Fixture:
tests/fixtures/otlp/cloudflare_trace.json (its README names the sections it follows)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import DecodeError
from pipeline.formats.decode import decode, decoded
from pipeline.formats.invocation import Span
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.spans import SPAN_COLUMNS, operation
from pipeline.transform.transformer import Transformer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "otlp"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0_US = 1_767_225_600_123_000
TRANSFORMER = Transformer(Extractor.from_files())


def cloudflare() -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((FIXTURES / "cloudflare_trace.json").read_bytes())
    return value


def spans_of(document: dict[str, Any] | bytes) -> list[Span]:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    return decoded(raw).spans


def error_of(document: dict[str, Any]) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decoded(orjson.dumps(document))
    return caught.value


def first_span(document: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    return span


def rows(document: dict[str, Any]) -> tuple[list[dict[str, Any]], Batch]:
    batch = Batch()
    TRANSFORMER.add(batch, "t", 0, 7, T0_US // 1000, None, orjson.dumps(document))
    part = batch.parts["t", 0]
    return [dict(zip(SPAN_COLUMNS, row, strict=True)) for row in part.spans], batch


def test_cloudflare_trace_decodes_every_span_and_no_invocation() -> None:
    raw = orjson.dumps(cloudflare())
    assert decode(raw) == []
    root, kv, github, d1 = spans_of(raw)
    assert [s.name for s in (root, kv, github, d1)] == ["fetch", "kv_get", "fetch", "d1_all"]
    assert {s.trace_id for s in (root, kv, github, d1)} == {TRACE}
    assert root.parent_span_id is None
    assert {kv.parent_span_id, github.parent_span_id, d1.parent_span_id} == {root.span_id}
    assert root.kind == 2
    assert github.kind == 0
    assert root.start_us == T0_US
    assert root.duration_us == 182_400
    assert kv.duration_us == 450  # under a millisecond: microseconds are kept
    assert root.script == "shop-api"
    assert root.invocation_id == d1.invocation_id
    assert root.attributes["cloudflare.outcome"] == "ok"
    assert root.resource["otel.scope.name"] == "cloudflare"
    assert root.resource["cloudflare.colo"] == "FRA"
    assert d1.events[0]["name"] == "exception"
    assert d1.events[0]["time_us"] == T0_US + 171_800


def test_rows_are_redacted_and_keep_their_origin() -> None:
    found, batch = rows(cloudflare())
    assert batch.rows == 4
    assert len(found) == 4
    root = found[0]
    assert root["trace_id"] == bytes.fromhex(TRACE)
    assert root["parent_span_id"] is None
    assert (root["topic"], root["kafka_partition"], root["kafka_offset"]) == ("t", 0, 7)
    assert [r["item"] for r in found] == [0, 1, 2, 3]
    assert "sk_live_51H" not in root["attributes"]
    assert "[REDACTED" in root["attributes"]
    assert "8f2a1b3c4d5e6f70" in root["attributes"]  # a ray id is no secret
    assert batch.redactions


def test_operations_name_the_host_of_a_call_out() -> None:
    _, batch = rows(cloudflare())
    operations = batch.parts["t", 0].rollups.operations
    hour = (T0_US // 1000) - (T0_US // 1000) % 3_600_000
    assert set(operations) == {
        (hour, "shop-api", "fetch"),
        (hour, "shop-api", "kv_get"),
        (hour, "shop-api", "fetch api.github.com"),
        (hour, "shop-api", "d1_all"),
    }
    d1 = operations[hour, "shop-api", "d1_all"]
    assert (d1.spans, d1.errors, d1.duration_us_max) == (1, 1, 21_900)
    assert operations[hour, "shop-api", "fetch"].errors == 0


def test_a_root_fetch_is_the_handler_not_a_call() -> None:
    root = spans_of(cloudflare())[0]
    assert operation(root.name, root) == "fetch"


def test_a_client_span_without_server_address_uses_the_url_host() -> None:
    doc = cloudflare()
    span = first_span(doc)
    span["kind"] = 3
    span["parentSpanId"] = "ffffffffffffffff"
    [decoded_span, *_] = spans_of(doc)
    assert operation(decoded_span.name, decoded_span) == "fetch shop.example.com"


def test_a_secret_in_a_span_name_stays_out_of_rows_and_rollups() -> None:
    doc = cloudflare()
    first_span(doc)["name"] = "GET /callback?token=ghp_" + "a1" * 18
    found, batch = rows(doc)
    assert "ghp_" not in found[0]["name"]
    assert not any("ghp_" in key[2] for key in batch.parts["t", 0].rollups.operations)


def test_sdk_forms_enum_names_and_numeric_times() -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.upper(),
                                "spanId": "00F067AA0BA902B7",
                                "name": "GET /users/{id}",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": T0_US * 1000,
                                "endTimeUnixNano": T0_US * 1000 + 5_000_000,
                                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                                "links": [{"traceId": TRACE, "spanId": "1111111111111111"}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [span] = spans_of(doc)
    assert (span.trace_id, span.span_id) == (TRACE, "00f067aa0ba902b7")
    assert (span.kind, span.status, span.status_message) == (2, 2, "boom")
    assert span.duration_us == 5_000
    assert span.script == "api"
    assert span.links == [{"trace_id": TRACE, "span_id": "1111111111111111", "attributes": {}}]


def test_an_end_before_the_start_is_a_duration_of_zero() -> None:
    doc = cloudflare()
    span = first_span(doc)
    span["endTimeUnixNano"] = str(int(span["startTimeUnixNano"]) - 1_000)
    assert spans_of(doc)[0].duration_us == 0


def test_an_unknown_enum_number_is_unspecified() -> None:
    doc = cloudflare()
    first_span(doc)["kind"] = 9
    assert spans_of(doc)[0].kind == 0


@pytest.mark.parametrize(
    ("change", "field", "why"),
    [
        ({"traceId": "xyz"}, "traceId", "32 hex digits"),
        ({"traceId": "0" * 32}, "traceId", "missing"),
        ({"spanId": None}, "spanId", "missing"),
        ({"parentSpanId": "abc"}, "parentSpanId", "16 hex digits"),
        ({"startTimeUnixNano": None}, "startTimeUnixNano", "missing"),
        ({"startTimeUnixNano": "soon"}, "startTimeUnixNano", "int64"),
        ({"kind": "SPAN_KIND_SIDEWAYS"}, "kind", "SPAN_KIND_SERVER"),
        ({"status": "ok"}, "status", "an object"),
        ({"events": {}}, "events", "an array"),
        ({"attributes": [{"key": 1}]}, "attributes[0].key", "a string"),
    ],
)
def test_malformed_spans_name_their_field(change: dict[str, Any], field: str, why: str) -> None:
    doc = cloudflare()
    first_span(doc).update(change)
    error = error_of(doc)
    assert error.field.startswith("resourceSpans[0].scopeSpans[0].spans[0].")
    assert error.field.endswith(field)
    assert why in str(error)


def test_a_span_with_text_postgresql_cannot_hold_is_repaired_and_counted() -> None:
    doc = cloudflare()
    first_span(doc)["name"] = "fetch\u0000"
    whole = decoded(orjson.dumps(doc))
    assert whole.spans[0].name == "fetch\ufffd"
    assert whole.sanitized == ["name"]
    _, batch = rows(doc)
    assert batch.sanitized == {"name": 1}


IDS = st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "spanId": IDS,
                "name": st.text(max_size=20),
                "kind": st.integers(0, 5),
                "startTimeUnixNano": st.integers(T0_US * 1000, T0_US * 1000 + 10**12),
                "endTimeUnixNano": st.integers(T0_US * 1000, T0_US * 1000 + 10**12),
            }
        ),
        max_size=8,
    )
)
@settings(max_examples=200, deadline=None)
def test_every_span_becomes_one_row_and_one_count(generated: list[dict[str, Any]]) -> None:
    doc = cloudflare()
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] = [
        {"traceId": TRACE, **copy.deepcopy(span)} for span in generated
    ]
    found, batch = rows(doc)
    assert len(found) == len(generated) == batch.rows
    operations = batch.parts["t", 0].rollups.operations.values() if generated else []
    assert sum(o.spans for o in operations) == len(generated)
