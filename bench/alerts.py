"""Alert latency benchmark: from an event on the events topic to its alert on the alerts topic.

    .venv/bin/python bench/alerts.py [--alerts 30]

One `tailpipe run` replica with default batching (`TAILPIPE_BATCH_MAX_AGE`, 1 s: the flush
interval). Each round publishes one invocation that ended with `exceededCpu` for a new script,
then reads the alerts topic until its alert arrives; the latency is the difference of the two
messages' Kafka timestamps. Prints p50, p95 and max against the target (one flush interval);
writes JSON under `.local/bench/`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from pipeline.kafka import clients  # noqa: E402
from pipeline.postgres.connect import connect  # noqa: E402
from pipeline.settings import load  # noqa: E402
from tests.conftest import env_of, isolated, tailpipe, unique  # noqa: E402
from tests.support.replica import Replica  # noqa: E402


async def main(rounds: int) -> int:
    base = load()
    schema = unique("bench_alerts")
    settings = isolated(base, schema, prefix="bench_")
    conn = await connect(base)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    if tailpipe("migrate", env=env_of(settings)).returncode != 0:
        raise SystemExit("migrate failed")
    await clients.ensure_topics(settings, {settings.topic: 1, settings.alerts_topic: 1})
    replica = Replica(settings, TAILPIPE_BATCH_MAX_AGE=str(base.batch_max_age))
    producer = AIOKafkaProducer(**clients.client_options(settings), acks="all")
    consumer = AIOKafkaConsumer(
        settings.alerts_topic, **clients.client_options(settings), auto_offset_reset="latest"
    )
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    try:
        # Another process is starting: its /readyz is where its assignment shows.
        while replica.readiness().get("partitions") != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await consumer.getmany(timeout_ms=500)  # joined at the end of the topic
        for n in range(rounds):
            now = int(time.time() * 1000)
            item = {"scriptName": f"bench-{n}", "outcome": "exceededCpu", "eventTimestamp": now,
                    "logs": [], "exceptions": []}  # fmt: skip
            sent = await producer.send_and_wait(settings.topic, orjson.dumps(item))
            async with asyncio.timeout(60):
                arrived = None
                while arrived is None:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        for r in records:
                            if orjson.loads(r.value)["script"] == f"bench-{n}":
                                arrived = r.timestamp
            latencies.append((arrived - sent.timestamp) / 1000)
    finally:
        await consumer.stop()
        await producer.stop()
        replica.terminate()
        conn = await connect(base)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
    latencies.sort()
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
    target = base.batch_max_age
    print(f"event -> alert on the topic, {len(latencies)} alerts, flush interval {target:.1f} s")
    print(f"  p50 {statistics.median(latencies):.3f} s   p95 {p95:.3f} s   "
          f"max {latencies[-1]:.3f} s   {'ok' if p95 <= target else 'SHORT'}")  # fmt: skip
    out = ROOT / ".local" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    (out / f"alerts-{stamp}.json").write_text(
        json.dumps({"latencies_s": latencies, "p95_s": p95, "flush_interval_s": target})
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=30)
    sys.exit(asyncio.run(main(parser.parse_args().alerts)))
