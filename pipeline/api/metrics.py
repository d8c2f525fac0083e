"""Every Prometheus metric of `tailpipe api`, defined in this one place, in a registry per app.

Served on the API's own port at `/metrics`, without a token: it holds counts and latencies by
route template, method and status class (pipeline/web/metrics.py), never a path asked for, a
parameter, a token or anything read from the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pipeline.web import metrics as http_metrics

PREFIX = "tailpipe_api"


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    routes: http_metrics.RouteTable

    @classmethod
    def create(cls, routes: http_metrics.RouteTable) -> Metrics:
        """`routes`: the app's routes, the values of the `route` label, exported at 0."""
        registry = CollectorRegistry()
        metrics = cls(
            registry=registry,
            requests=http_metrics.requests_counter(PREFIX, "the API", registry),
            request_seconds=http_metrics.duration_histogram(PREFIX, "the API", registry),
            routes=routes,
        )
        http_metrics.at_zero(metrics.requests, metrics.request_seconds, routes)
        return metrics

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = http_metrics.labels(self.routes, route, method, status)
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
