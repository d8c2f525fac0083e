"""OTLP/HTTP's two encodings: a logs export read into OTLP/JSON, and the answers written back.

OTLP/HTTP (https://opentelemetry.io/docs/specs/otlp/#otlphttp) carries the same messages as
binary protobuf (`application/x-protobuf`, what the OTel SDKs and the OpenTelemetry Collector
send by default) or as JSON (`application/json`, the only form Cloudflare's Workers
Observability export sends). Whatever arrived, what the collector publishes is OTLP/JSON, so
the decoder reads one form: a protobuf body is parsed with the `opentelemetry-proto`
package's generated classes and written with protobuf's JSON mapping, except for the trace and
span ids, which that generic mapping writes as base64 where OTLP/JSON requires lowercase hex.
Enums are integers (`severityNumber: 9`), as OTLP/JSON requires; 64-bit integers are strings
(`"timeUnixNano": "1700000000000000000"`), which OTLP/JSON allows beside numbers.

Answers are in the request's encoding: `ExportLogsServiceResponse` for a success, and for every
4xx and 5xx the `google.rpc.Status` message the spec asks for (in JSON when the request was
JSON or of a type the collector does not take).
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
    """`(document, lenient)`: the export as OTLP/JSON, or a 400 for a body that does not parse.

    `lenient` says a JSON body escaped a lone surrogate (a string `JSON.stringify` cut inside
    an emoji): it is kept, for the decoder to repair, as the trace-item route does."""
    if encoding == "protobuf":
        try:
            message = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
        except DecodeError as exc:
            raise Rejection(
                400, "malformed", f"body: not an OTLP protobuf export ({exc})"
            ) from None
        document = json_format.MessageToDict(message, use_integers_for_enums=True)
        _hex_ids(document)
        return document, False
    try:
        parsed, lenient = loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed", f"body: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise Rejection(
            400, "malformed", "body: expected an ExportLogsServiceRequest (a JSON object)"
        )
    return parsed, lenient


def _hex_ids(document: dict[str, Any]) -> None:
    """Rewrite the base64 ids protobuf's JSON mapping wrote as the hex OTLP/JSON uses."""
    for resource_logs in document.get("resourceLogs", ()):
        for scope_logs in resource_logs.get("scopeLogs", ()):
            for record in scope_logs.get("logRecords", ()):
                for name in ("traceId", "spanId"):
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()


def logs_response(encoding: Encoding, rejected: int = 0, message: str = "") -> bytes:
    """An `ExportLogsServiceResponse`: empty for a full success (the spec leaves
    `partialSuccess` unset then), else `partialSuccess {rejectedLogRecords, errorMessage}`."""
    response = logs_service_pb2.ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
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
