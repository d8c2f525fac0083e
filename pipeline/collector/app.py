"""`tailpipe collect`: the HTTP front door for producers that cannot speak Kafka.

Tail Workers post their `events` to `/v1/tail`; streaming Tail Workers post the event envelopes
of `tailStream` to `/v1/tail-stream` (pipeline/collector/tail_stream.py: grouped by invocation);
Logpush jobs post gzip'd NDJSON batches of `workers_trace_events` to `/v1/logpush`; Workers
Observability destinations and OTel SDKs post OTLP/HTTP logs exports to `/v1/logs` and traces
exports to `/v1/traces` (pipeline/collector/otlp_receiver.py, which answers as the OTLP spec
says: 200 with an `ExportLogsServiceResponse` or `ExportTraceServiceResponse`, errors as
`google.rpc.Status`). A request is authenticated, read under the size cap, parsed and validated
whole, and each item is published to the topic as its own message, keyed by its identity (a
streaming tail or OTLP message: by its invocation or trace). The answer is 202 only once Kafka
acknowledged every item; when Kafka cannot take them the answer is 503 with `Retry-After`, so
the sender keeps the data and tries again. Delivery is therefore at least once: a sender
retrying after a timeout may publish twice.

`/healthz` says the process answers, `/readyz` that Kafka answered recently, `/metrics` is
Prometheus (pipeline/collector/metrics.py: every request by route, method and status class,
items, bytes, refusals by reason, publish latency), on the same port and without a token, like
the health checks. The parts live in pipeline/collector/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline import logconfig
from pipeline.collector import body, items, otlp_receiver, tail_stream
from pipeline.collector.auth import Tokens
from pipeline.collector.metrics import Metrics
from pipeline.collector.rejection import Rejection
from pipeline.collector.sink import RETRY_AFTER_S, KafkaSink, Unavailable
from pipeline.settings import Settings
from pipeline.web import metrics as http_metrics
from pipeline.web import server

log = logging.getLogger("tailpipe.collect")


Parser = Callable[[bytes], items.Batch]
Binder = Callable[[Sequence[tuple[str, str]]], Parser]
"""What a route makes of a request's query string: the parser of its body (or a Rejection)."""
ROUTES: dict[str, Binder] = {
    "/v1/tail": lambda query: items.tail,
    "/v1/logpush": lambda query: items.logpush,  # the query holds Logpush's `header_` settings
    tail_stream.ROUTE: tail_stream.parser,
}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Collector:
    """The state one app shares between its requests."""

    def __init__(self, settings: Settings) -> None:
        self.tokens = Tokens(settings.collect_tokens, settings.collect_secret_header)
        self.limit = settings.collect_max_body_bytes
        self.sink = KafkaSink(settings)
        self.routes = [self.route(path, bind) for path, bind in ROUTES.items()]
        self.routes += [
            Route(otlp_receiver.LOGS_ROUTE, self.otlp_logs, methods=["POST"]),
            Route(otlp_receiver.TRACES_ROUTE, self.otlp_traces, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
        ]
        self.metrics = Metrics.create(
            http_metrics.RouteTable(self.routes),
            ingest=[*ROUTES, *otlp_receiver.ROUTES],
            otlp=otlp_receiver.ROUTES,
        )
        self.otlp = otlp_receiver.OtlpReceiver(self.tokens, self.limit, self.sink, self.metrics)

    def route(self, path: str, bind: Binder) -> Route:
        async def endpoint(request: Request) -> Response:
            return await self.ingest(request, path, bind)

        return Route(path, endpoint, methods=["POST"])

    async def ingest(self, request: Request, route: str, bind: Binder) -> Response:
        try:
            if not self.tokens.allows(request.headers):
                raise Rejection.unauthorized(self.tokens.header)
            parse = bind(request.query_params.multi_items())
            try:
                raw = await body.read(request.headers, request.stream(), self.limit)
            except ClientDisconnect:
                raise Rejection(400, "disconnected", "body: the client went away") from None
            self.metrics.received_bytes.labels(route).inc(len(raw))
            gzip = body.is_gzip(request.headers, raw)
            if body.inline(len(raw), gzip):
                parsed = self._prepare(raw, gzip, parse)
            else:
                parsed = await asyncio.to_thread(self._prepare, raw, gzip, parse)
            if parsed.probe:
                return JSONResponse({"published": 0, "validation": True}, status_code=200)
            started = time.perf_counter()
            if parsed.items:
                await self.sink.publish(parsed.items)
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
        except Rejection as rejection:
            self.metrics.rejects.labels(rejection.reason).inc()
            headers = {"WWW-Authenticate": "Bearer"} if rejection.status == 401 else None
            return JSONResponse(rejection.body(), rejection.status, headers=headers)
        except Unavailable as exc:
            self.metrics.rejects.labels("unavailable").inc()
            return JSONResponse(
                {"error": f"Kafka unavailable, retry later: {exc}"},
                503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.metrics.items.labels(route).inc(len(parsed.items))
        return JSONResponse({"published": len(parsed.items)}, status_code=202)

    async def otlp_logs(self, request: Request) -> Response:
        return await self.otlp.logs(request)

    async def otlp_traces(self, request: Request) -> Response:
        return await self.otlp.traces(request)

    def _prepare(self, raw: bytes, gzip: bool, parse: Parser) -> items.Batch:
        return parse(body.gunzip(raw, self.limit) if gzip else raw)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.sink.ready:
            return JSONResponse({"ready": True, "topic": self.sink.topic})
        problem = self.sink.problem or "Kafka has not answered recently"
        return JSONResponse({"ready": False, "topic": self.sink.topic, "problem": problem}, 503)

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> Starlette:
    """The collector as an ASGI app; its lifespan starts and stops the Kafka producer.

    Raises SettingsError when `collect_tokens` is empty: an open collector is a mistake.
    """
    collector = Collector(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collector.sink.start()
        try:
            yield
        finally:
            await collector.sink.stop()

    app = Starlette(
        routes=collector.routes,
        lifespan=lifespan,
        # Counts and times every request, by route template, method and status class.
        middleware=[Middleware(http_metrics.Instrumented, metrics=collector.metrics)],
    )
    app.state.collector = collector
    return app


def serve(settings: Settings, host: str = "0.0.0.0") -> int:
    """Run the collector on `collect_port` until SIGTERM or SIGINT; 0 after a clean stop.

    Binds every interface by default: Cloudflare must reach it (through a TLS proxy).
    """
    app = create_app(settings)  # raises SettingsError before anything is bound
    logconfig.configure(settings.log_format, settings.log_level)
    return server.run(app, host, settings.collect_port)
