"""`POST /v1/logs`: the OTLP/HTTP logs receiver, for Workers Observability and any OTel SDK.

A Cloudflare destination (`https://host/v1/logs`, with a header holding a collector token) and
any OTLP/HTTP exporter post `ExportLogsServiceRequest`s here. The answers are those of the
OTLP/HTTP spec, which is what OTLP clients retry by:

- 200 with an `ExportLogsServiceResponse` in the request's encoding once Kafka acknowledged
  every message; with `partialSuccess {rejectedLogRecords, errorMessage}` when some records
  were rejected (pipeline/collector/otlp_logs.py says which), which the client must not retry;
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
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from pipeline.collector import body, otlp_encoding, otlp_logs
from pipeline.collector.auth import Tokens
from pipeline.collector.metrics import Metrics
from pipeline.collector.rejection import Rejection
from pipeline.collector.sink import RETRY_AFTER_S, KafkaSink, Unavailable

LOGS_ROUTE = "/v1/logs"
ROUTES = (LOGS_ROUTE,)


@dataclass(frozen=True, slots=True)
class OtlpReceiver:
    """The OTLP routes of one collector, sharing its tokens, size limit, producer and metrics."""

    tokens: Tokens
    limit: int
    sink: KafkaSink
    metrics: Metrics

    async def logs(self, request: Request) -> Response:
        route = LOGS_ROUTE
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
            export = await self._read(request, route, encoding)
            if export.preflight and not export.items and not export.rejected:
                self.metrics.otlp_requests.labels(route, "preflight").inc()
                return self._answer(answer, otlp_encoding.logs_response(answer))
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
        content = otlp_encoding.logs_response(answer, export.rejected, export.error_message())
        return self._answer(answer, content)

    async def _read(
        self, request: Request, route: str, encoding: otlp_encoding.Encoding
    ) -> otlp_logs.Export:
        try:
            raw = await body.read(request.headers, request.stream(), self.limit)
        except ClientDisconnect:
            raise Rejection(400, "disconnected", "body: the client went away") from None
        self.metrics.received_bytes.labels(route).inc(len(raw))
        gzip = body.is_gzip(request.headers, raw)
        if body.inline(len(raw), gzip):
            return self._prepare(raw, gzip, encoding)
        return await asyncio.to_thread(self._prepare, raw, gzip, encoding)

    def _prepare(
        self, raw: bytes, gzip: bool, encoding: otlp_encoding.Encoding
    ) -> otlp_logs.Export:
        inflated = body.gunzip(raw, self.limit) if gzip else raw
        document, lenient = otlp_encoding.logs_request(inflated, encoding)
        return otlp_logs.split(document, lenient)

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
