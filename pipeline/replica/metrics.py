"""Every Prometheus metric of a consumer replica, defined in this one place.

A registry per replica rather than the global one: tests and embedders run several consumers in
one process. On the hot path nothing here is touched per event: `Metrics.flushed` is called
once per stored batch with the batch's own counters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline import __version__, compiled, native
from pipeline.errors import DECODE_REASONS
from pipeline.formats.sanitize import FIELDS as SANITIZED_FIELDS
from pipeline.postgres.flush import RAW_TABLES
from pipeline.transform.batch import Batch
from pipeline.transform.dedup import KINDS as DUPLICATE_KINDS

if TYPE_CHECKING:
    from pipeline.postgres.writer import Written

FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROW_BUCKETS = (10, 100, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000, 100_000)
FAILURE_KINDS = ("postgres", "dead_letter_store", "partitions_lost", "duplicate", "guard_rail")
"""Label values of `tailpipe_flush_failures_total`, exported at 0 from the start so that rate()
and increase() see the first failure."""
DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    messages: Counter
    invocations: Counter
    decode_failures: Counter
    sanitized: Counter
    rows: Counter
    flushes: Counter
    flush_seconds: Histogram
    batch_rows: Histogram
    delay_seconds: Histogram
    redactions: Counter
    dead_letters: Counter
    dead_letter_objects: Counter
    assignments: Counter
    retries: Counter
    dependency_up: Gauge
    paused_partitions: Gauge
    lag: Gauge
    in_flight_rows: Gauge
    in_flight_bytes: Gauge
    guard_tripped: Gauge
    stranded_partitions: Gauge
    messages_expired: Counter
    alerts: Counter
    completed: Counter
    duplicates: Counter
    stream_closed: Counter
    stream_dropped: Counter
    flush_failures: Counter
    last_flush: Gauge
    build_info: Gauge

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        metrics = cls(
            registry=r,
            messages=Counter(
                "tailpipe_messages_total", "Kafka messages stored (as rows or dead letters)",
                registry=r,
            ),
            invocations=Counter(
                "tailpipe_invocations_total", "invocations decoded and stored", registry=r
            ),
            decode_failures=Counter(
                "tailpipe_decode_failures_total", "messages no accepted format describes",
                ["reason"], registry=r,
            ),
            sanitized=Counter(
                "tailpipe_sanitized_total",
                "values repaired to be stored, by column: U+FFFD for a character PostgreSQL cannot"
                " hold (U+0000, a lone surrogate), or an invalid trace or span id dropped",
                ["field"], registry=r,
            ),
            rows=Counter(
                "tailpipe_rows_written_total", "rows committed to PostgreSQL", ["table"],
                registry=r,
            ),
            flushes=Counter("tailpipe_flushes_total", "batches committed", registry=r),
            flush_seconds=Histogram(
                "tailpipe_flush_duration_seconds",
                "one batch: dead letters, COPY, rollups and offsets, until commit",
                buckets=FLUSH_BUCKETS, registry=r,
            ),
            batch_rows=Histogram(
                "tailpipe_batch_rows", "rows per committed batch", buckets=ROW_BUCKETS,
                registry=r,
            ),
            delay_seconds=Histogram(
                "tailpipe_end_to_end_delay_seconds",
                "from the oldest event time of a batch to its commit",
                buckets=DELAY_BUCKETS, registry=r,
            ),
            redactions=Counter(
                "tailpipe_redactions_total", "secrets replaced before storage, by rule",
                ["rule"], registry=r,
            ),
            dead_letters=Counter(
                "tailpipe_dead_letters_total", "messages dead-lettered, by error class",
                ["reason"], registry=r,
            ),
            dead_letter_objects=Counter(
                "tailpipe_dead_letter_objects_total", "dead-letter objects written and indexed",
                registry=r,
            ),
            assignments=Counter(
                "tailpipe_partition_assignments_total",
                "partition assignments received (one per rebalance this replica took part in)",
                registry=r,
            ),
            retries=Counter(
                "tailpipe_retries_total", "transient failures retried, by dependency",
                ["dependency"], registry=r,
            ),
            dependency_up=Gauge(
                "tailpipe_dependency_up",
                "PostgreSQL and the dead-letter store: 1 unless the last call failed transiently",
                ["dependency"], registry=r,
            ),
            paused_partitions=Gauge(
                "tailpipe_paused_partitions", "partitions paused by backpressure or an outage",
                registry=r,
            ),
            lag=Gauge(
                "tailpipe_consumer_lag_messages",
                "per owned partition: the broker's end offset minus the offset stored",
                ["topic", "partition"], registry=r,
            ),
            in_flight_rows=Gauge(
                "tailpipe_in_flight_rows", "rows read but not yet stored (filling and queued)",
                registry=r,
            ),
            in_flight_bytes=Gauge(
                "tailpipe_in_flight_bytes", "message bytes read but not yet stored", registry=r
            ),
            guard_tripped=Gauge(
                "tailpipe_guard_rail_tripped",
                "1 once too many recent messages were bad: consumption stopped",
                registry=r,
            ),
            stranded_partitions=Gauge(
                "tailpipe_stranded_partitions",
                "partitions not read because their stored offset is past the end of their log"
                " (the topic was recreated or lost data): an operator must decide",
                registry=r,
            ),
            messages_expired=Counter(
                "tailpipe_messages_expired_total",
                "messages Kafka deleted (retention) before they were stored: lost",
                registry=r,
            ),
            alerts=Counter(
                "tailpipe_alerts_total",
                "critical alerts this replica raised (new ones, not repeat occurrences), by rule",
                ["rule"], registry=r,
            ),
            completed=Counter(
                "tailpipe_invocations_completed_total",
                "OTLP invocations whose outcome and CPU and wall time their trace's root span"
                " filled in, stored earlier or in the same batch", registry=r,
            ),
            duplicates=Counter(
                "tailpipe_duplicates_total",
                "invocations and spans not stored again: a sender's retry of what was stored"
                " (TAILPIPE_DEDUP), by kind", ["kind"], registry=r,
            ),
            stream_closed=Counter(
                "tailpipe_stream_invocations_closed_total",
                "streamed invocations stored whole, by how they ended: outcome (the runtime's),"
                " timeout (no event for TAILPIPE_STREAM_TIMEOUT: stored as unknown)",
                ["how"], registry=r,
            ),
            stream_dropped=Counter(
                "tailpipe_stream_dropped_events_total",
                "events the runtime dropped from a streaming tail (its streamDiagnostic"
                " droppedEvents), counted when their invocation is stored", registry=r,
            ),
            flush_failures=Counter(
                "tailpipe_flush_failures_total",
                "flush attempts that did not commit, by kind: postgres (transient, retried), "
                "dead_letter_store, partitions_lost, duplicate, guard_rail",
                ["kind"], registry=r,
            ),
            last_flush=Gauge(
                "tailpipe_last_flush_timestamp_seconds",
                "Unix time of the last committed batch (0 until the first)", registry=r,
            ),
            build_info=Gauge(
                "tailpipe_build_info",
                "always 1; the version, whether the hot path runs compiled, and whether the "
                "native core is loaded (true/false)",
                ["version", "compiled", "native"], registry=r,
            ),
        )  # fmt: skip
        flags = (str(compiled()).lower(), str(native.loaded()).lower())
        metrics.build_info.labels(__version__, *flags).set(1)
        for dependency in ("postgres", "s3"):
            metrics.dependency_up.labels(dependency).set(1)
        for kind in FAILURE_KINDS:
            metrics.flush_failures.labels(kind)
        for column in SANITIZED_FIELDS:
            metrics.sanitized.labels(column)
        for reason in DECODE_REASONS:
            metrics.decode_failures.labels(reason)
        for kind in DUPLICATE_KINDS:
            metrics.duplicates.labels(kind)
        for how in ("outcome", "timeout"):
            metrics.stream_closed.labels(how)
        for table, _, _ in RAW_TABLES:  # tail_spans too, before any span came
            metrics.rows.labels(table)
        return metrics

    def flushed(
        self, batch: Batch, written: Written, seconds: float, now: float | None = None
    ) -> None:
        """Count one committed batch: once per batch, never per event."""
        self.messages.inc(batch.messages)
        self.flushes.inc()
        self.last_flush.set_to_current_time()
        self.flush_seconds.observe(seconds)
        self.batch_rows.observe(batch.rows)
        for table, n in written.rows.items():
            if n:
                self.rows.labels(table).inc(n)
        closed = written.stream
        self.invocations.inc(written.rows.get("tail_events", 0) + closed.timed_out)
        if closed.completed:
            self.stream_closed.labels("outcome").inc(closed.completed)
        if closed.timed_out:
            self.stream_closed.labels("timeout").inc(closed.timed_out)
        if closed.dropped:
            self.stream_dropped.inc(closed.dropped)
        for rule, n in written.redactions.items():
            self.redactions.labels(rule).inc(n)
        for reason, n in written.dead.items():
            self.dead_letters.labels(reason).inc(n)
        if written.objects:
            self.dead_letter_objects.inc(written.objects)
        self.alerts_created(written.alerts)
        if written.completed:
            self.completed.inc(written.completed)
        for kind, n in written.duplicates.items():
            self.duplicates.labels(kind).inc(n)
        for reason, n in batch.decode_failures.items():
            self.decode_failures.labels(reason).inc(n)
        for column, n in batch.sanitized.items():
            self.sanitized.labels(column).inc(n)
        if batch.oldest_event_ms is not None:
            now = time.time() if now is None else now
            self.delay_seconds.observe(max(0.0, now - batch.oldest_event_ms / 1000))

    def alerts_created(self, by_rule: Mapping[str, int]) -> None:
        for rule, n in by_rule.items():
            self.alerts.labels(rule).inc(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
