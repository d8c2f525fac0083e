"""OTLP/HTTP's two encodings: an export read into OTLP/JSON, and the answers written back.

OTLP/HTTP (https://opentelemetry.io/docs/specs/otlp/#otlphttp) carries the same messages as
binary protobuf (`application/x-protobuf`, what the OTel SDKs and the OpenTelemetry Collector
send by default) or as JSON (`application/json`, the only form Cloudflare's Workers
Observability export sends). Whatever arrived, what the collector publishes is OTLP/JSON, so
the decoder reads one form: a protobuf body is parsed with the `opentelemetry-proto`
package's generated classes and written with protobuf's JSON mapping, except for the trace and
span ids (a log record's, a span's, its parent's and its links'), which that generic mapping
writes as base64 where OTLP/JSON requires lowercase hex. Enums are integers
(`severityNumber: 9`, a span's `kind: 2`), as OTLP/JSON requires; 64-bit integers are strings
(`"timeUnixNano": "1700000000000000000"`), which OTLP/JSON allows beside numbers.

Answers are in the request's encoding: `ExportLogsServiceResponse` or
`ExportTraceServiceResponse` for a success, and for every 4xx and 5xx the `google.rpc.Status`
message the spec asks for (in JSON when the request was JSON or of a type the collector does
not take).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from pipeline.collector.otlp_export import LOGS, TRACES, Signal
from pipeline.collector.rejection import Rejection
from pipeline.formats.sanitize import loads

Encoding = Literal["json", "protobuf"]
MEDIA_TYPES: dict[Encoding, str] = {
    "json": "application/json",
    "protobuf": "application/x-protobuf",
}
_ENCODINGS: dict[str, Encoding] = {media: encoding for encoding, media in MEDIA_TYPES.items()}

GRPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 429: 8, 503: 14}
"""`google.rpc.Code` of each HTTP status the receiver answers: INVALID_ARGUMENT,
UNAUTHENTICATED, RESOURCE_EXHAUSTED, UNAVAILABLE (what gRPC's own mapping of them gives)."""
_UNKNOWN = 2


def encoding_of(headers: Mapping[str, str]) -> Encoding | None:
    """The encoding `Content-Type` names (parameters such as `charset` aside), or None."""
    media = headers.get("content-type", "").partition(";")[0].strip().lower()
    return _ENCODINGS.get(media)


def answer_encoding(headers: Mapping[str, str]) -> Encoding:
    """The encoding of the answer: protobuf for a protobuf request, JSON for anything else."""
    return encoding_of(headers) or "json"


def logs_request(raw: bytes, encoding: Encoding) -> tuple[dict[str, Any], bool]:
    """`(document, lenient)`: a logs export as OTLP/JSON, or a 400 for a body that does not
    parse (see `_request`)."""
    return _request(raw, encoding, logs_service_pb2.ExportLogsServiceRequest, LOGS)


def traces_request(raw: bytes, encoding: Encoding) -> tuple[dict[str, Any], bool]:
    """`(document, lenient)`: a traces export as OTLP/JSON, or a 400 for a body that does not
    parse (see `_request`)."""
    return _request(raw, encoding, trace_service_pb2.ExportTraceServiceRequest, TRACES)


def logs_response(encoding: Encoding, rejected: int = 0, message: str = "") -> bytes:
    """An `ExportLogsServiceResponse`: empty for a full success (the spec leaves
    `partialSuccess` unset then), else `partialSuccess {rejectedLogRecords, errorMessage}`."""
    response = logs_service_pb2.ExportLogsServiceResponse()
    return _response(response, "rejected_log_records", rejected, message, encoding)


def traces_response(encoding: Encoding, rejected: int = 0, message: str = "") -> bytes:
    """An `ExportTraceServiceResponse`: empty for a full success, else
    `partialSuccess {rejectedSpans, errorMessage}`."""
    response = trace_service_pb2.ExportTraceServiceResponse()
    return _response(response, "rejected_spans", rejected, message, encoding)


def _request(
    raw: bytes, encoding: Encoding, message_type: Any, signal: Signal
) -> tuple[dict[str, Any], bool]:
    """The export of `message_type` in `raw` as OTLP/JSON.

    `lenient` says a JSON body escaped a lone surrogate (a string `JSON.stringify` cut inside
    an emoji): it is kept, for the decoder to repair, as the trace-item route does."""
    if encoding == "protobuf":
        try:
            message = message_type.FromString(raw)
        except DecodeError as exc:
            raise Rejection(
                400, "malformed", f"body: not an OTLP protobuf export ({exc})"
            ) from None
        document: dict[str, Any] = json_format.MessageToDict(message, use_integers_for_enums=True)
        _hex_ids(document, signal)
        return document, False
    try:
        parsed, lenient = loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed", f"body: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        name = message_type.DESCRIPTOR.name
        raise Rejection(400, "malformed", f"body: expected an {name} (a JSON object)")
    return parsed, lenient


def _hex_ids(document: dict[str, Any], signal: Signal) -> None:
    """Rewrite the base64 ids protobuf's JSON mapping wrote as the hex OTLP/JSON uses. A log
    record has no `parentSpanId` nor `links`, so one walk serves both signals."""
    for resource in document.get(signal.resources, ()):
        for scope in resource.get(signal.scopes, ()):
            for item in scope.get(signal.items, ()):
                _hex(item, ("traceId", "spanId", "parentSpanId"))
                for link in item.get("links", ()):
                    _hex(link, ("traceId", "spanId"))


def _hex(item: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in item:
            item[name] = base64.b64decode(item[name]).hex()


def _response(
    response: Any, rejected_field: str, rejected: int, message: str, encoding: Encoding
) -> bytes:
    if rejected or message:
        setattr(response.partial_success, rejected_field, rejected)
        response.partial_success.error_message = message
    return _encode(response, encoding)


def status(encoding: Encoding, http_status: int, message: str) -> bytes:
    """The `google.rpc.Status` body of a 4xx or 5xx answer."""
    return _encode(
        status_pb2.Status(code=GRPC_CODES.get(http_status, _UNKNOWN), message=message), encoding
    )


def _encode(message: Any, encoding: Encoding) -> bytes:
    if encoding == "protobuf":
        encoded: bytes = message.SerializeToString()
        return encoded
    return orjson.dumps(json_format.MessageToDict(message))
