"""Kafka down while OpenTelemetry clients send: the collector answers 503 with `Retry-After`,
the OpenTelemetry Python SDK's OTLP/HTTP exporters (logs and traces) retry by it, and once
Kafka is back every record and span is published exactly once. On a private broker that the
test kills and restarts (tests/support/broker.py); the shared one serves the other tests."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.collector.test_collect import PARTITIONS, TOKEN, eventually, read_topic, running
from tests.support.broker import Broker

SPANS = 5
RECORDS = 4
DEADLINE_S = 120.0
_UNAVAILABLE = re.compile(
    r'tailpipe_collect_otlp_requests_total\{outcome="unavailable",route="([^"]+)"\} (\S+)'
)


def export_spans(endpoint: str) -> tuple[bool, set[tuple[str, str]]]:
    """Spans exported one by one (a SimpleSpanProcessor blocks on each export): whether every
    export succeeded, and the (trace, span) ids given. Blocking: runs in a thread."""
    results: list[bool] = []

    class Counting(OTLPSpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            result = super().export(spans)
            results.append(result.name == "SUCCESS")
            return result

    exporter = Counting(
        endpoint=endpoint, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=DEADLINE_S
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "outage"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.outage")
    given = set()
    for n in range(SPANS):
        with tracer.start_as_current_span(f"step {n}") as span:
            context = span.get_span_context()
            given.add((f"{context.trace_id:032x}", f"{context.span_id:016x}"))
    provider.shutdown()
    return all(results) and len(results) == SPANS, given


def export_records(endpoint: str) -> tuple[bool, list[str]]:
    """Log records exported one by one, as `export_spans` does; their bodies."""
    results: list[bool] = []

    class Counting(OTLPLogExporter):
        def export(self, batch):  # type: ignore[no-untyped-def]
            result = super().export(batch)
            results.append(result.name == "SUCCESS")
            return result

    exporter = Counting(
        endpoint=endpoint, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=DEADLINE_S
    )
    provider = LoggerProvider(resource=Resource.create({"service.name": "outage"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("tests.outage")
    bodies = [f"record {n}" for n in range(RECORDS)]
    for body in bodies:
        logger.emit(body=body)
    provider.shutdown()
    return all(results) and len(results) == RECORDS, bodies


async def test_sdk_exporters_retry_through_a_kafka_outage_and_nothing_is_lost_or_doubled(
    settings: Settings, tmp_path: Path
) -> None:
    broker = Broker(tmp_path)
    await broker.start()
    try:
        own = replace(settings, kafka_bootstrap=broker.bootstrap, collect_tokens=(TOKEN,))
        await ensure_topics(own, {own.topic: PARTITIONS})
        async with running(own) as client:
            broker.kill()
            base = str(client.base_url)
            spans = asyncio.create_task(asyncio.to_thread(export_spans, f"{base}/v1/traces"))
            records = asyncio.create_task(asyncio.to_thread(export_records, f"{base}/v1/logs"))

            async def both_refused() -> bool:
                metrics = (await client.get("/metrics")).text
                refused = {m[1] for m in _UNAVAILABLE.finditer(metrics) if float(m[2]) > 0}
                return refused == {"/v1/traces", "/v1/logs"}

            await eventually(both_refused, 60, "both routes answering 503 while Kafka is down")
            await broker.start()
            async with asyncio.timeout(DEADLINE_S):
                spans_ok, given_spans = await spans
                records_ok, bodies = await records
            assert spans_ok, "every span export ended in success, after retries"
            assert records_ok, "every log export ended in success, after retries"

        messages = await read_topic(own, SPANS + RECORDS)
        published_spans: Counter[tuple[str, str]] = Counter()
        published_bodies: Counter[str] = Counter()
        for message in messages:
            document = orjson.loads(message.value)
            for entry in document.get("resourceSpans", ()):
                for scope in entry["scopeSpans"]:
                    for span in scope["spans"]:
                        published_spans[span["traceId"], span["spanId"]] += 1
            for entry in document.get("resourceLogs", ()):
                for scope in entry["scopeLogs"]:
                    for record in scope["logRecords"]:
                        published_bodies[record["body"]["stringValue"]] += 1
        assert published_spans == Counter(given_spans), "each span once"
        assert published_bodies == Counter(bodies), "each record once"
    finally:
        broker.kill()
