"""`POST /v1/logs` and `POST /v1/traces`: the OTLP/HTTP receivers, for Workers Observability
and any OTel SDK.

A Cloudflare destination (`https://host/v1/logs` or `https://host/v1/traces`, with a header
holding a collector token) and any OTLP/HTTP exporter post `ExportLogsServiceRequest`s and
`ExportTraceServiceRequest`s here. The two routes differ only in how an export is read, cut
into messages (otlp_logs.py: one invocation's records; otlp_traces.py: one trace's spans) and
answered; the rest is one handler. The answers are those of the OTLP/HTTP spec, which is what
OTLP clients retry by:

- 200 with an `ExportLogsServiceResponse` or `ExportTraceServiceResponse` in the request's
  encoding once Kafka acknowledged every message; with `partialSuccess {rejectedLogRecords |
  rejectedSpans, errorMessage}` when some records or spans were rejected, which the client
  must not retry;
- 200, nothing published, for Cloudflare's preflight;
- 400 for a body that does not parse as an export, 401 without a known token, 413 over
  `collect_max_body_bytes` (raw or inflated), 415 for a content type or encoding other than
  JSON or protobuf, optionally gzip'd: each with a `google.rpc.Status` body, never retried;
- 503 with `Retry-After` when Kafka cannot take the messages: the client retries, and its
  retry lands on the same partitions (the keys do not change).

Authentication, size limits, gzip and the Kafka producer are the other routes'
(auth.py, body.py, sink.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from pipeline.collector import body, otlp_encoding, otlp_logs, otlp_traces
from pipeline.collector.auth import Tokens
from pipeline.collector.metrics import Metrics
from pipeline.collector.otlp_export import Export
from pipeline.collector.rejection import Rejection
from pipeline.collector.sink import RETRY_AFTER_S, KafkaSink, Unavailable

LOGS_ROUTE = "/v1/logs"
TRACES_ROUTE = "/v1/traces"
ROUTES = (LOGS_ROUTE, TRACES_ROUTE)


@dataclass(frozen=True, slots=True)
class _Signal:
    """What one route does its own way: read the body, cut the export, write the answer."""

    route: str
    read: Callable[[bytes, otlp_encoding.Encoding], tuple[dict[str, Any], bool]]
    split: Callable[[dict[str, Any], bool], Export]
    respond: Callable[[otlp_encoding.Encoding, int, str], bytes]


_LOGS = _Signal(
    LOGS_ROUTE, otlp_encoding.logs_request, otlp_logs.split, otlp_encoding.logs_response
)
_TRACES = _Signal(
    TRACES_ROUTE, otlp_encoding.traces_request, otlp_traces.split, otlp_encoding.traces_response
)


@dataclass(frozen=True, slots=True)
class OtlpReceiver:
    """The OTLP routes of one collector, sharing its tokens, size limit, producer and metrics."""

    tokens: Tokens
    limit: int
    sink: KafkaSink
    metrics: Metrics

    async def logs(self, request: Request) -> Response:
        return await self._receive(request, _LOGS)

    async def traces(self, request: Request) -> Response:
        return await self._receive(request, _TRACES)

    async def _receive(self, request: Request, signal: _Signal) -> Response:
        route = signal.route
        answer = otlp_encoding.answer_encoding(request.headers)
        try:
            if not self.tokens.allows(request.headers):
                raise Rejection.unauthorized(self.tokens.header)
            encoding = otlp_encoding.encoding_of(request.headers)
            if encoding is None:
                raise Rejection(
                    415,
                    "malformed",
                    f"Content-Type: {request.headers.get('content-type', '')!r} is not "
                    "supported; send application/json or application/x-protobuf",
                )
            export = await self._read(request, signal, encoding)
            if export.preflight and not export.items and not export.rejected:
                self.metrics.otlp_requests.labels(route, "preflight").inc()
                return self._answer(answer, signal.respond(answer, 0, ""))
            started = time.perf_counter()
            if export.items:
                await self.sink.publish(export.items)
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
        except Rejection as rejection:
            self.metrics.rejects.labels(rejection.reason).inc()
            self.metrics.otlp_requests.labels(route, "refused").inc()
            headers = {"WWW-Authenticate": "Bearer"} if rejection.status == 401 else {}
            return self._failure(answer, rejection.status, rejection.message, headers)
        except Unavailable as exc:
            self.metrics.rejects.labels("unavailable").inc()
            self.metrics.otlp_requests.labels(route, "unavailable").inc()
            return self._failure(
                answer,
                503,
                f"Kafka unavailable, retry later: {exc}",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        self.metrics.items.labels(route).inc(len(export.items))
        self.metrics.otlp_records.labels(route, "accepted").inc(export.records)
        self.metrics.otlp_records.labels(route, "rejected").inc(export.rejected)
        outcome = "partial" if export.rejected else "accepted"
        self.metrics.otlp_requests.labels(route, outcome).inc()
        content = signal.respond(answer, export.rejected, export.error_message())
        return self._answer(answer, content)

    async def _read(
        self, request: Request, signal: _Signal, encoding: otlp_encoding.Encoding
    ) -> Export:
        try:
            raw = await body.read(request.headers, request.stream(), self.limit)
        except ClientDisconnect:
            raise Rejection(400, "disconnected", "body: the client went away") from None
        self.metrics.received_bytes.labels(signal.route).inc(len(raw))
        gzip = body.is_gzip(request.headers, raw)
        if body.inline(len(raw), gzip):
            return self._prepare(raw, gzip, signal, encoding)
        return await asyncio.to_thread(self._prepare, raw, gzip, signal, encoding)

    def _prepare(
        self, raw: bytes, gzip: bool, signal: _Signal, encoding: otlp_encoding.Encoding
    ) -> Export:
        inflated = body.gunzip(raw, self.limit) if gzip else raw
        document, lenient = signal.read(inflated, encoding)
        return signal.split(document, lenient)

    @staticmethod
    def _answer(encoding: otlp_encoding.Encoding, content: bytes) -> Response:
        return Response(content, 200, media_type=otlp_encoding.MEDIA_TYPES[encoding])

    @staticmethod
    def _failure(
        encoding: otlp_encoding.Encoding, status: int, message: str, headers: Mapping[str, str]
    ) -> Response:
        return Response(
            otlp_encoding.status(encoding, status, message),
            status,
            headers=dict(headers),
            media_type=otlp_encoding.MEDIA_TYPES[encoding],
        )
