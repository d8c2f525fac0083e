"""`otlp_traces.split` and the traces encoding alone, without HTTP or Kafka.

Each rejection reason and each accepted id form by example; then properties over generated
exports (several resources, scopes and traces, ids in every form OTLP senders write, a defect
here and there, spans of every size against a Kafka message made small for the test): every
good span is published exactly once, in a message of its own resource entry and trace, keyed
by the trace id, its ids in lowercase hex, no message over the limit; every bad span is
counted; and arbitrary JSON gives an `Export` or a 400, never another exception.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from pipeline.collector import otlp_encoding, otlp_export, otlp_logs, otlp_traces
from pipeline.collector.items import MAX_ITEM_BYTES
from pipeline.collector.rejection import Rejection

EXAMPLES = int(os.environ.get("TAILPIPE_PROPERTY_EXAMPLES", "300"))
"""Examples per property (TAILPIPE_PROPERTY_EXAMPLES=20000 for a long run)."""
BASE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_MESSAGE = 3_000
"""The Kafka message size of the properties, so that traces split without megabytes of data."""
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
HEX = re.compile(r"[0-9a-f]*")


START = "1767225600123000000"


def good(**fields: Any) -> dict[str, Any]:
    return {"traceId": TRACE, "spanId": SPAN, "name": "GET /", "startTimeUnixNano": START,
            **fields}  # fmt: skip


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in good().items() if k != name}


def document(*spans: Any, resource: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}]}
    if resource is not None:
        entry["resource"] = resource
    return {"resourceSpans": [entry]}


def published(export: otlp_export.Export) -> list[dict[str, Any]]:
    return [
        span
        for item in export.items
        for entry in orjson.loads(item.value)["resourceSpans"]
        for scope in entry["scopeSpans"]
        for span in scope["spans"]
    ]


# -- by example -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "problem"),
    [
        (7, "not an object"),
        (None, "not an object"),
        (without("traceId"), "traceId: missing; OTLP requires one on every span"),
        (good(traceId=""), "traceId: missing"),
        (good(traceId=None), "traceId: missing"),
        (good(traceId="0" * 32), "traceId: all zeros, which W3C calls an invalid id"),
        (good(traceId=base64.b64encode(bytes(16)).decode()), "traceId: all zeros"),
        (without("spanId"), "spanId: missing"),
        (good(spanId=""), "spanId: missing"),
        (good(spanId="0" * 16), "spanId: all zeros"),
        (good(traceId="xyz"), "traceId: expected 16 bytes in hex, got 'xyz'"),
        (good(traceId=TRACE[:-2]), "traceId: expected 16 bytes in hex"),
        (good(traceId=TRACE + "00"), "traceId: expected 16 bytes in hex"),
        (good(traceId=12), "traceId: expected 16 bytes in hex, got 12"),
        (good(spanId=TRACE), "spanId: expected 8 bytes in hex"),
        (good(spanId=base64.b64encode(bytes(range(1, 5))).decode()), "spanId: expected 8 bytes"),
        (good(parentSpanId="nope"), "parentSpanId: expected 8 bytes in hex, got 'nope'"),
        (good(parentSpanId=TRACE), "parentSpanId: expected 8 bytes in hex"),
        (good(parentSpanId=[]), "parentSpanId: expected 8 bytes in hex, got []"),
        (good(links={}), "links: expected an array, got an object"),
        (good(links=["x"]), "links[0]: not an object"),
        (good(links=[{"traceId": TRACE, "spanId": SPAN}, {"traceId": "1"}]), "links[1].traceId:"),
        (good(links=[{"traceId": TRACE, "spanId": "zz"}]), "links[0].spanId: expected 8 bytes"),
        (good(name="x" * MAX_ITEM_BYTES), "a Kafka message takes at most"),
        # What the consumer's decoder refuses: rejected alone here, not dead-lettered there
        # with the other spans of its message.
        (without("startTimeUnixNano"), "startTimeUnixNano: missing: a span needs its start"),
        (good(startTimeUnixNano="soon"), "startTimeUnixNano: expected an int64"),
        (good(kind="SIDEWAYS"), "kind: expected a number or one of SPAN_KIND_"),
        (good(attributes=[{"key": "n", "value": {"intValue": "x"}}]), "attributes[0].value"),
        (good(events=[{"name": 1}]), "events[0].name: expected a string"),
    ],
)
def test_each_unusable_span_is_rejected_with_its_reason(span: Any, problem: str) -> None:
    result = otlp_traces.split(document(good(name="kept"), span))
    assert (result.rejected, result.records) == (1, 1)
    assert [s["name"] for s in published(result)] == ["kept"]
    [shown] = result.problems
    assert problem in shown, shown
    assert result.error_message().startswith("1 spans rejected: resourceSpans[0]")


@pytest.mark.parametrize(
    ("given_ids", "written"),
    [
        ((TRACE, SPAN, ""), (TRACE, SPAN, None)),
        ((TRACE.upper(), SPAN.upper(), SPAN.upper()), (TRACE, SPAN, SPAN)),
        (
            tuple(base64.b64encode(bytes.fromhex(x)).decode() for x in (TRACE, SPAN, SPAN)),
            (TRACE, SPAN, SPAN),
        ),
        ((TRACE, SPAN, "0" * 16), (TRACE, SPAN, "0" * 16)),  # W3C's "no parent", kept
    ],
)
def test_ids_in_hex_of_either_case_or_base64_are_written_lowercase(
    given_ids: tuple[str, str, str], written: tuple[str, str, str | None]
) -> None:
    trace, span, parent = given_ids
    link = {"traceId": trace, "spanId": span, "attributes": []}
    zero_link = {"traceId": "0" * 32, "spanId": "", "attributes": [{"key": "k"}]}
    sent = {"traceId": trace, "spanId": span, "parentSpanId": parent, "links": [link, zero_link],
            "startTimeUnixNano": START}  # fmt: skip
    result = otlp_traces.split(document(sent))
    assert result.rejected == 0
    [out] = published(result)
    assert (out["traceId"], out["spanId"], out["parentSpanId"] or None) == written
    assert out["links"] == [{**link, "traceId": TRACE, "spanId": SPAN}, zero_link]
    [item] = result.items
    assert item.key == TRACE.encode()


def test_a_cloudflare_entry_without_spans_is_a_preflight_and_no_other_is() -> None:
    def service(name: str) -> dict[str, Any]:
        return {"attributes": [{"key": "service.name", "value": {"stringValue": name}}]}

    hello = service(otlp_export.PREFLIGHT_SERVICE)
    assert otlp_traces.split(document(resource=hello)).preflight == 1
    assert otlp_traces.split({"resourceSpans": [{"resource": hello}]}).preflight == 1
    with_span = otlp_traces.split(document(good(), resource=hello))
    assert (with_span.preflight, with_span.records) == (0, 1)
    assert otlp_traces.split(document(resource=service("shop"))).preflight == 0
    assert otlp_traces.split({}).items == []


FINE = {"scopeSpans": [{"spans": [good()]}]}
"""An entry that is fine: a body is refused whole whatever the rest holds."""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resourceSpans": {}}, "body: resourceSpans: expected an array, got an object"),
        ({"resourceSpans": [FINE, "x"]}, "body: resourceSpans[1]: expected an object, got a"),
        ({"resourceSpans": [FINE, {"scopeSpans": 1}]}, "[1].scopeSpans: expected an array, got a"),
        ({"resourceSpans": [{"scopeSpans": [{}, []]}]}, "scopeSpans[1]: expected an object, got"),
        ({"resourceSpans": [{"scopeSpans": [{"spans": True}]}]}, "spans: expected an array, got"),
    ],
)
def test_a_body_not_shaped_as_an_export_is_refused_whole(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(Rejection) as caught:
        otlp_traces.split(body)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_a_lone_surrogate_is_kept_for_the_consumer_to_repair() -> None:
    """`JSON.stringify` writes a string cut inside an emoji as a lone surrogate escape: the
    span is published with the escape, as the logs receiver and the trace-item route do."""
    span = (
        f'{{"traceId":"{TRACE}","spanId":"{SPAN}","name":"cut \\ud83d",'
        f'"startTimeUnixNano":"{START}"}}'
    )
    body = f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span}]}}]}}]}}'.encode()
    parsed, lenient = otlp_encoding.traces_request(body, "json")
    assert lenient
    [item] = otlp_traces.split(parsed, lenient).items
    assert b'"name":"cut \\ud83d"' in item.value


def test_the_error_message_names_what_was_rejected() -> None:
    spans = otlp_traces.split(document(*range(5)))
    assert spans.error_message() == (
        "5 spans rejected: resourceSpans[0].scopeSpans[0].spans[0]: not an object; "
        "resourceSpans[0].scopeSpans[0].spans[1]: not an object; "
        "resourceSpans[0].scopeSpans[0].spans[2]: not an object; and 2 more"
    )
    records = otlp_logs.split({"resourceLogs": [{"scopeLogs": [{"logRecords": [1]}]}]})
    assert records.error_message().startswith("1 log records rejected: ")
    assert otlp_traces.split(document(good())).error_message() == ""


# -- the encoding ---------------------------------------------------------------------------------


def test_a_protobuf_export_reads_as_otlp_json_with_every_id_in_hex() -> None:
    trace, other = bytes(range(16)), bytes(range(16, 32))
    span, parent, linked = b"\x01" * 8, b"\x02" * 8, b"\x03" * 8
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    value = scope.spans.add(trace_id=trace, span_id=span, parent_span_id=parent, kind=3)
    value.links.add(trace_id=other, span_id=linked)
    value.links.add()  # an empty link: no ids to rewrite
    document_, lenient = otlp_encoding.traces_request(request.SerializeToString(), "protobuf")
    assert not lenient
    assert document_ == {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace.hex(),
                                "spanId": span.hex(),
                                "parentSpanId": parent.hex(),
                                "kind": 3,
                                "links": [{"traceId": other.hex(), "spanId": linked.hex()}, {}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    with pytest.raises(Rejection, match="expected an ExportTraceServiceRequest"):
        otlp_encoding.traces_request(b"[1]", "json")


def test_the_answers_name_rejected_spans() -> None:
    assert otlp_encoding.traces_response("json") == b"{}"
    assert orjson.loads(otlp_encoding.traces_response("json", 2, "why")) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "why"}
    }
    encoded = otlp_encoding.traces_response("protobuf", 3, "why")
    partial = trace_service_pb2.ExportTraceServiceResponse.FromString(encoded).partial_success
    assert (partial.rejected_spans, partial.error_message) == (3, "why")


# -- properties -----------------------------------------------------------------------------------

POOL = [bytes.fromhex(TRACE), bytes(range(1, 17)), bytes(range(0xF0, 0x100))]
"""Few trace ids, so that generated spans share traces within and across entries."""
DEFECTS = (
    "no trace", "zero trace", "bad trace", "no span", "zero span", "bad span", "bad parent",
    "bad link", "not an object", "huge",
)  # fmt: skip
IDS = (("traceId", 32), ("spanId", 16), ("parentSpanId", 16))


def written(raw: bytes, form: str) -> str:
    """An id as a sender may write it."""
    if form == "base64":
        return base64.b64encode(raw).decode()
    return raw.hex().upper() if form == "upper" else raw.hex()


@st.composite
def spans(draw: st.DrawFn) -> tuple[Any, dict[str, Any] | None]:
    """A span as sent, and as it must be published (None: it must be rejected)."""
    form = draw(st.sampled_from(["lower", "upper", "base64"]))
    trace = draw(st.sampled_from(POOL))
    span = draw(st.binary(min_size=7, max_size=7)) + b"\x01"  # never all zeros
    parent = draw(st.none() | st.binary(min_size=8, max_size=8))
    linked = draw(st.none() | st.tuples(st.sampled_from(POOL), st.binary(min_size=8, max_size=8)))
    pad = draw(st.integers(0, 1_500))
    sent: dict[str, Any] = {
        "traceId": written(trace, form),
        "spanId": written(span, form),
        "name": draw(st.text(max_size=12)),
        "kind": draw(st.integers(0, 5)),
        "startTimeUnixNano": START,
        "attributes": [{"key": "pad", "value": {"stringValue": "x" * pad}}],
    }
    expected = {**sent, "traceId": trace.hex(), "spanId": span.hex()}
    if parent is not None:
        sent["parentSpanId"], expected["parentSpanId"] = (written(parent, form), parent.hex())
    if linked is not None:
        link_trace, link_span = linked
        sent["links"] = [{"traceId": written(link_trace, form), "spanId": written(link_span, form)}]
        expected["links"] = [{"traceId": link_trace.hex(), "spanId": link_span.hex()}]
    defect = draw(st.none() | st.sampled_from(DEFECTS))
    if defect is None:
        return sent, expected
    name, _, problem = defect.partition(" ")
    field_name = {"trace": "traceId", "span": "spanId", "parent": "parentSpanId"}.get(problem, "")
    if defect == "not an object":
        return draw(st.none() | st.integers() | st.text(max_size=3) | st.lists(st.none())), None
    if defect == "huge":
        sent["attributes"][0]["value"]["stringValue"] = "x" * SMALL_MESSAGE
    elif defect == "bad link":
        sent["links"] = [{"traceId": "not hex", "spanId": written(span, form)}]
    elif name == "no":
        del sent[field_name]
    elif name == "zero":
        sent[field_name] = written(bytes(len(span) * (2 if problem == "trace" else 1)), form)
    else:
        sent[field_name] = draw(
            st.sampled_from(
                ["", "z" * 16, "ab", written(span if field_name == "traceId" else trace, form)]
            )
        )
        if sent[field_name] == "" and field_name == "parentSpanId":
            sent[field_name] = "0x"  # empty is no parent: not a defect
    return sent, None


@st.composite
def exports(draw: st.DrawFn) -> tuple[dict[str, Any], list[list[list[dict[str, Any] | None]]]]:
    """An export, and for each entry and scope the spans as they must be published."""
    entries, expected = [], []
    for i in range(draw(st.integers(1, 3))):
        scopes, wanted = [], []
        for j in range(draw(st.integers(0, 3))):
            drawn = draw(st.lists(spans(), max_size=6))
            scopes.append({"scope": {"name": f"scope {j}"}, "spans": [s for s, _ in drawn]})
            wanted.append([e for _, e in drawn])
        entry: dict[str, Any] = {
            "resource": {"attributes": [{"key": "entry", "value": {"intValue": i}}]},
            "scopeSpans": scopes,
        }
        if draw(st.booleans()):
            entry["schemaUrl"] = "https://opentelemetry.io/schemas/1.26.0"
        entries.append(entry)
        expected.append(wanted)
    return {"resourceSpans": entries}, expected


@BASE
@given(exports())
def test_every_good_span_is_published_once_in_its_entry_and_trace_under_the_trace_id(
    drawn: tuple[dict[str, Any], list[list[list[dict[str, Any] | None]]]],
) -> None:
    document_, expected = drawn
    with mock.patch.object(otlp_export, "MAX_ITEM_BYTES", SMALL_MESSAGE):
        result = otlp_traces.split(document_)
    wanted: dict[tuple[int, str], list[tuple[int, dict[str, Any]]]] = {}
    for i, scopes in enumerate(expected):
        for j, spans_ in enumerate(scopes):
            for span in spans_:
                if span is not None:
                    wanted.setdefault((i, span["traceId"]), []).append((j, span))
    every = [span for scopes in expected for spans_ in scopes for span in spans_]
    assert result.rejected == every.count(None)
    assert result.records == len(every) - every.count(None)
    got: dict[tuple[int, str], list[tuple[int, dict[str, Any]]]] = {}
    messages: dict[tuple[int, str], int] = {}
    for item in result.items:
        assert len(item.value) <= SMALL_MESSAGE
        [entry] = orjson.loads(item.value)["resourceSpans"]
        i = entry["resource"]["attributes"][0]["value"]["intValue"]
        sent = document_["resourceSpans"][i]
        assert {k: v for k, v in entry.items() if k != "scopeSpans"} == {
            k: v for k, v in sent.items() if k != "scopeSpans"
        }
        assert item.key is not None
        trace = item.key.decode()
        messages[i, trace] = messages.get((i, trace), 0) + 1
        for scope in entry["scopeSpans"]:
            j = int(scope["scope"]["name"].removeprefix("scope "))
            assert scope["spans"], "no scope without spans"
            for span in scope["spans"]:
                assert span["traceId"] == trace
                for name, length in IDS:
                    if name in span:
                        assert len(span[name]) == length
                        assert HEX.fullmatch(span[name])
                got.setdefault((i, trace), []).append((j, span))
    assert got == wanted  # each once, in the export's order, under its entry and trace
    event(
        "a trace over several messages"
        if max(messages.values(), default=1) > 1
        else "no trace split"
    )
    event("a span over the limit" if "at most" in result.error_message() else "none too large")
    for (i, trace), count in messages.items():
        whole = alone(document_["resourceSpans"][i], wanted[i, trace])
        if len(orjson.dumps(whole)) <= SMALL_MESSAGE:
            assert count == 1, "a trace that fits in one message is not split"


def alone(entry: dict[str, Any], spans_: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The export of `entry` holding only `spans_` (scope index, span as published)."""
    indexes = sorted({j for j, _ in spans_})
    scopes = [
        {"scope": {"name": f"scope {j}"}, "spans": [s for k, s in spans_ if k == j]}
        for j in indexes
    ]
    return {"resourceSpans": [{**entry, "scopeSpans": scopes}]}


NAMES = st.sampled_from(
    ["resourceSpans", "scopeSpans", "spans", "resource", "scope", "attributes", "links",
     "traceId", "spanId", "parentSpanId", "key", "value", "stringValue"]
)  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(NAMES | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=40,
)
"""Any JSON, its keys often the names an export uses."""
ANY_ID = st.sampled_from([TRACE, SPAN, TRACE.upper(), "", "0" * 32, "0" * 16, "AAAA", "x"])
SPAN_LIKE = JSON_VALUES | st.fixed_dictionaries(
    {"traceId": ANY_ID, "spanId": ANY_ID}, optional={"parentSpanId": ANY_ID, "links": JSON_VALUES}
)
ENTRY_LIKE = st.fixed_dictionaries(
    {"scopeSpans": st.lists(st.fixed_dictionaries({"spans": st.lists(SPAN_LIKE, max_size=4)}))},
    optional={"resource": JSON_VALUES},
)
ANY_EXPORT = st.dictionaries(st.sampled_from(["resourceSpans", "x"]), JSON_VALUES, max_size=2) | (
    st.lists(ENTRY_LIKE, max_size=3).map(lambda entries: {"resourceSpans": entries})
)
"""A body's document: any JSON under `resourceSpans`, or the shape of an export with anything
in its spans, among them spans with ids of every kind."""


@BASE
@given(ANY_EXPORT)
def test_any_json_gives_an_export_or_a_400(document_: dict[str, Any]) -> None:
    refused: Rejection | None = None
    try:
        result = otlp_traces.split(document_)
    except Rejection as rejection:
        refused = rejection
    if refused is not None:
        assert refused.status == 400
        assert refused.message.startswith("body: ")
        return
    for item in result.items:
        assert item.key is not None
        assert re.fullmatch(rb"[0-9a-f]{32}", item.key)
        assert item.key != b"0" * 32
        [entry] = orjson.loads(item.value)["resourceSpans"]
        assert all(
            s["traceId"] == item.key.decode() for sc in entry["scopeSpans"] for s in sc["spans"]
        )
    assert result.records == len(
        [s for item in result.items for s in published(otlp_traces.split(orjson.loads(item.value)))]
    )


def test_a_resource_the_decoder_refuses_rejects_its_spans_not_the_others() -> None:
    bad = {"attributes": [{"key": "service.name", "value": {"intValue": "no"}}]}
    body = document(good(), resource=bad)
    body["resourceSpans"].append(document(good(name="kept"))["resourceSpans"][0])
    result = otlp_traces.split(body)
    assert (result.rejected, result.records) == (1, 1)
    assert [s["name"] for s in published(result)] == ["kept"]
    assert "resource.attributes[0].value.intValue" in result.problems[0]
