"""ASGI middleware: one trace item per HTTP request.

Everything logged while the request is handled (by any tailpipe logger or the stdlib handler,
in the handler's task, its child tasks or its thread pool) lands in the request's trace, which
is published once the application returns: event `{"request": {"url", "method", "headers"},
"response": {"status"}}`, URL and headers redacted. If the application raises, the outcome is
`exception`, the exception is recorded, the status is 500 unless a response had started, and
the exception is re-raised to the server. Other scope types (lifespan, websocket) pass through.

The request is a span of the trace its caller's W3C `traceparent` names, or of a new trace
(`propagation`): the envelope's `spanContext`, and the span in progress for outgoing calls and
for records logged in tasks that outlive the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from pipeline.logger.bound import Logger
from pipeline.logger.job import finish
from pipeline.logger.propagation import SPAN, SpanContext, header_pairs, incoming, new_trace
from pipeline.logger.setup import get_logger, shutdown
from pipeline.logger.trace import CURRENT, Trace
from pipeline.transform.redact.engine import redact_headers, redact_url

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TailpipeMiddleware:
    def __init__(self, app: ASGIApp, logger: Logger | None = None) -> None:
        self.app = app
        self._logger = logger

    @property
    def logger(self) -> Logger:
        """The logger given, else the one `init` made, looked up per request: a framework
        builds its middleware before the lifespan that calls `init` has run."""
        return self._logger if self._logger is not None else get_logger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan" and self._logger is None:
            await self.app(scope, receive, self._shutting_down(send))
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        trace = self._trace(scope)
        trace.span = span = _span(scope)
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = message.get("status")
            await send(message)

        token = CURRENT.set(trace)
        span_token = SPAN.set(span)
        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            SPAN.reset(span_token)
            CURRENT.reset(token)
            if status is None and failure is not None:
                status = 500  # what the server answers for an application that raised
            if status is not None:
                trace.event["response"] = {"status": status}
            finish(self.logger, trace, failure)

    def _shutting_down(self, send: Send) -> Send:
        """`send` that delivers what `init`'s publisher holds (`setup.shutdown`) once the
        application has shut down, before the server hears so: servers such as uvicorn end the
        process by re-raising SIGTERM, and `atexit` handlers do not run then."""

        async def forward(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.to_thread(shutdown)
            await send(message)

        return forward

    def _trace(self, scope: Scope) -> Trace:
        core = self.logger.core
        try:
            counts = core.redactions
            request = {
                "url": redact_url(request_url(scope), counts),
                "method": str(scope.get("method", "")),
                "headers": redact_headers(request_headers(scope), counts),
            }
        except Exception as exc:  # a malformed scope must not fail the request
            core.failed(exc)
            request = {"url": "", "method": str(scope.get("method", "")), "headers": {}}
        return Trace(
            core.service,
            {"request": request},
            max_lines=core.max_lines,
            max_bytes=core.max_bytes,
        )


def _span(scope: Scope) -> SpanContext:
    """The request's own span: a child of the caller's `traceparent`, else a new trace."""
    try:
        return incoming(header_pairs(scope.get("headers") or ()))
    except Exception:  # a malformed scope must not fail the request
        return new_trace()


def request_headers(scope: Scope) -> dict[str, str]:
    """Lower-cased names; a repeated header joined as HTTP allows (`; ` for cookies)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            headers[name] += ("; " if name == "cookie" else ", ") + value
        else:
            headers[name] = value
    return headers


def request_url(scope: Scope) -> str:
    scheme = scope.get("scheme") or "http"
    host = None
    for raw_name, raw_value in scope.get("headers") or ():
        if raw_name.lower() == b"host":
            host = raw_value.decode("latin-1")
            break
    if host is None:
        server = scope.get("server")
        if server:
            name, port = server[0], server[1]
            default = (scheme in ("http", "ws") and port == 80) or (
                scheme in ("https", "wss") and port == 443
            )
            host = name if default or port is None else f"{name}:{port}"
        else:
            host = "localhost"
    raw_path = scope.get("raw_path")
    if raw_path:
        path = raw_path.decode("latin-1")
    else:
        path = quote(
            str(scope.get("root_path", "")) + str(scope.get("path", "")), safe="/:@!$&'()*+,;=~%"
        )
    query = scope.get("query_string") or b""
    url = f"{scheme}://{host}{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url
