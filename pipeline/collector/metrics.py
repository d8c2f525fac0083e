"""The collector's Prometheus metrics, in a registry of their own.

A registry per app rather than the global one: tests and embedders build several apps in one
process, and the global registry refuses a second metric of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

PUBLISH_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    items: Counter
    received_bytes: Counter
    rejects: Counter
    publish_seconds: Histogram

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "tailpipe_collect_requests_total",
                "requests to the ingest routes, by route and answered status",
                ["route", "status"],
                registry=registry,
            ),
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
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
