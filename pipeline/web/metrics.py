"""Request counts and latencies of tailpipe's HTTP processes, by route, method and status.

`tailpipe api` (pipeline/api/metrics.py) and `tailpipe collect` (pipeline/collector/metrics.py)
each define `<prefix>_requests_total` and `<prefix>_request_duration_seconds` with the helpers
here, in their own registry, and wrap their app in `Instrumented`. Every label takes its value
from a fixed set, whatever a client sends:

- `route`: the template of the app's route the path matches (`/api/errors/{fingerprint}`,
  never the path asked for; a 405 is counted under the route, with the method asked for), the
  mount's path for a mounted app (`/static`), or `other` when no route matches (a 404, or the
  redirect to the path with or without its trailing slash);
- `method`: `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`, `OPTIONS`, or `other`;
- `status`: the class of the status code sent, `1xx` to `5xx`.

Each route's declared methods are exported at 0 from the start with `2xx`, `4xx` and `5xx`, so
that rate() and increase() see the first request of each kind, as the replica's metrics do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Mount, Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
AT_ZERO = ("2xx", "4xx", "5xx")
LABELS = ("route", "method", "status")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""From a health check's millisecond to a slow query's tens of seconds (the API's statement
timeout is 30 s)."""


class RouteTable:
    """An app's route templates, with their declared methods and the patterns they match.

    The middleware finds the template of a request itself, before the app runs, the way
    Starlette's router does (first match in order, a mount by its prefix): it needs nothing
    from the framework's internals, so no router rewrite changes what is counted."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        entries: list[tuple[str, re.Pattern[str]]] = []
        methods: dict[str, set[str]] = {}
        for route in routes:
            if isinstance(route, Mount):
                template, pattern = route.path, compile_path(route.path + "/{path:path}")[0]
                declared = {"GET"}
            elif isinstance(route, Route):
                template, pattern = route.path, compile_path(route.path)[0]
                declared = set(route.methods or {"GET"})
            else:
                continue
            entries.append((template, pattern))
            # Starlette adds HEAD to every GET route: exported only when it is all there is.
            methods.setdefault(template, set()).update(declared - {"HEAD"} or declared)
        self._entries = tuple(entries)
        self.methods = {t: tuple(sorted(m)) for t, m in methods.items()}
        self.templates = frozenset(self.methods)

    def template(self, scope: Scope) -> str:
        """The template of the route that takes this request, or `other`."""
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for template, pattern in self._entries:
            if pattern.match(path):
                return template
        return OTHER


def requests_counter(prefix: str, process: str, registry: CollectorRegistry) -> Counter:
    return Counter(
        f"{prefix}_requests_total",
        f"HTTP requests {process} answered, by route template, method and status class",
        LABELS,
        registry=registry,
    )


def duration_histogram(prefix: str, process: str, registry: CollectorRegistry) -> Histogram:
    return Histogram(
        f"{prefix}_request_duration_seconds",
        f"time {process} took for a request, from its arrival to the end of the answer, by "
        "route template, method and status class",
        LABELS,
        buckets=BUCKETS,
        registry=registry,
    )


def at_zero(requests: Counter, seconds: Histogram, routes: RouteTable) -> None:
    for route, methods in routes.methods.items():
        for method in methods:
            for status in AT_ZERO:
                requests.labels(route, method, status)
                seconds.labels(route, method, status)


def status_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code < 600 else "5xx"


def labels(routes: RouteTable, route: str, method: str, code: int) -> tuple[str, ...]:
    """The label values of one request, each from its fixed set."""
    return (
        route if route in routes.templates else OTHER,
        method if method in METHODS else OTHER,
        status_class(code),
    )


class Observer(Protocol):
    @property
    def routes(self) -> RouteTable: ...

    def request(self, route: str, method: str, status: int, seconds: float) -> None: ...


class Instrumented:
    """ASGI middleware: counts and times every HTTP request of the app it wraps.

    The route's template comes from the metrics' RouteTable. A request that raised before
    any answer is counted as the 500 the server sends for it."""

    def __init__(self, app: ASGIApp, metrics: Observer) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self.metrics.routes.template(scope)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.request(route, scope["method"], status, time.perf_counter() - started)
