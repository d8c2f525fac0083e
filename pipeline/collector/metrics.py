"""The collector's Prometheus metrics, defined in this one place, in a registry of their own.

A registry per app rather than the global one: tests and embedders build several apps in one
process, and the global registry refuses a second metric of the same name. Every label comes
from a fixed set, exported at 0 from the start: the ingest routes (among them the OTLP ones,
`/v1/logs` and `/v1/traces`), the reasons of a refusal, and the route, method and status class
of every request (pipeline/web/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pipeline.web import metrics as http_metrics

PREFIX = "tailpipe_collect"
PUBLISH_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
REJECT_REASONS = (
    "unauthorized", "too_large", "malformed", "invalid", "disconnected", "unavailable",
)  # fmt: skip
"""Label values of `tailpipe_collect_rejects_total` (pipeline/collector/rejection.py)."""
OTLP_OUTCOMES = ("accepted", "partial", "preflight", "refused", "unavailable")
"""Label values of `tailpipe_collect_otlp_requests_total`: every record (log record or span)
published, some rejected (`partialSuccess`), Cloudflare's preflight (answered 200, nothing
published), refused with a 4xx, Kafka unavailable (503)."""
OTLP_RECORDS = ("accepted", "rejected")
"""Label values of `tailpipe_collect_otlp_records_total`, which counts log records on
`/v1/logs` and spans on `/v1/traces`."""


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    items: Counter
    received_bytes: Counter
    rejects: Counter
    publish_seconds: Histogram
    otlp_requests: Counter
    otlp_records: Counter
    routes: http_metrics.RouteTable

    @classmethod
    def create(
        cls,
        routes: http_metrics.RouteTable | None = None,
        ingest: Iterable[str] = (),
        otlp: Iterable[str] = (),
    ) -> Metrics:
        """`routes`: every route of the app; `ingest`: the templates of those that publish;
        `otlp`: those of them that are OTLP receivers."""
        routes = routes or http_metrics.RouteTable(())
        registry = CollectorRegistry()
        metrics = cls(
            registry=registry,
            requests=http_metrics.requests_counter(PREFIX, "the collector", registry),
            request_seconds=http_metrics.duration_histogram(PREFIX, "the collector", registry),
            items=Counter(
                "tailpipe_collect_items_total",
                "items published to Kafka and acknowledged",
                ["route"],
                registry=registry,
            ),
            received_bytes=Counter(
                "tailpipe_collect_bytes_total",
                "request body bytes received, as sent (compressed or not)",
                ["route"],
                registry=registry,
            ),
            rejects=Counter(
                "tailpipe_collect_rejects_total",
                "requests refused: unauthorized, too_large, malformed, invalid, disconnected, "
                "unavailable (Kafka)",
                ["reason"],
                registry=registry,
            ),
            publish_seconds=Histogram(
                "tailpipe_collect_publish_seconds",
                "time from the first send of a request's items to Kafka's last acknowledgement",
                buckets=PUBLISH_BUCKETS,
                registry=registry,
            ),
            otlp_requests=Counter(
                "tailpipe_collect_otlp_requests_total",
                "OTLP exports by route and outcome: accepted, partial (some records or spans "
                "rejected), preflight (Cloudflare's destination check), refused (4xx), "
                "unavailable (Kafka)",
                ["route", "outcome"],
                registry=registry,
            ),
            otlp_records=Counter(
                "tailpipe_collect_otlp_records_total",
                "OTLP records by route (log records on /v1/logs, spans on /v1/traces): accepted "
                "(published, Kafka acknowledged) or rejected (in the answer's partialSuccess)",
                ["route", "result"],
                registry=registry,
            ),
            routes=routes,
        )
        http_metrics.at_zero(metrics.requests, metrics.request_seconds, routes)
        for route in ingest:
            metrics.items.labels(route)
            metrics.received_bytes.labels(route)
        for reason in REJECT_REASONS:
            metrics.rejects.labels(reason)
        for route in otlp:
            for outcome in OTLP_OUTCOMES:
                metrics.otlp_requests.labels(route, outcome)
            for result in OTLP_RECORDS:
                metrics.otlp_records.labels(route, result)
        return metrics

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        labels = http_metrics.labels(self.routes, route, method, status)
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
