"""Ingest, end to end against the real Kafka and PostgreSQL: exactly once, whatever happens."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import __version__, kafka, store, synth
from pipeline.batch import Batch
from pipeline.decode import decode
from pipeline.errors import DecodeError
from pipeline.extract import Extractor
from pipeline.partitions import PartitionManager, ahead, partition_name
from pipeline.publisher import BulkPublisher
from pipeline.settings import Settings
from pipeline.transform import Transformer
from tests.conftest import ROOT, env_of, free_port, tailpipe

START = 1_764_374_400_000


@dataclass
class Produced:
    count: int
    invocations: int
    log_rows: int
    poison: int
    redactions: Counter[str]


async def produce(settings: Settings, n: int, seed: int, poison_ratio: float = 0.0) -> Produced:
    """Publish n synthetic messages and count, independently of the pipeline, what they hold
    (the redactions as the transform counts them: the rules are tested on their own)."""
    invocations = log_rows = poison = 0
    transformer = Transformer(Extractor.from_files())
    batch = Batch()
    async with BulkPublisher(settings, settings.topic) as publisher:
        stream = synth.messages(seed, START, poison_ratio=poison_ratio)
        for offset, message in enumerate(itertools.islice(stream, n)):
            await publisher.add(message.key, message.value)
            transformer.add(batch, "t", 0, offset, START, message.key, message.value)
            try:
                decoded = decode(message.value)
            except DecodeError:
                poison += 1
                continue
            invocations += len(decoded)
            log_rows += sum(len(i.logs) + len(i.exceptions) for i in decoded)
    return Produced(n, invocations, log_rows, poison, batch.redactions)


class Replica:
    """A real `tailpipe run` process."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            **env_of(settings),
            "TAILPIPE_METRICS_PORT": str(self.port),
            "TAILPIPE_BATCH_MAX_AGE": "0.2",
            "TAILPIPE_BATCH_MAX_ROWS": "4000",
        }
        # A file, not a pipe: a replica must never block on a log line nobody reads.
        self.log = tempfile.NamedTemporaryFile(prefix="replica-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def scrape(self) -> dict[str, float]:
        """The replica's /metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-6000:]

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM; the exit code. A replica that fails to stop cleanly shows why."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        if code != 0:
            print(self.tail(), file=sys.stderr)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for number, replica in enumerate(started):
        if replica.proc.poll() is None:
            replica.kill()
        print(f"--- replica {number} log tail ---\n{replica.tail()}", file=sys.stderr)


@pytest.fixture
async def migrated(settings: Settings) -> Settings:
    result = tailpipe("migrate", env=env_of(settings))
    assert result.returncode == 0, result.stderr
    return settings


async def stored_total(db: asyncpg.Connection, topic: str) -> int:
    return int(
        await db.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM pipeline_offsets WHERE topic = $1", topic
        )
    )


async def wait_stored(db: asyncpg.Connection, topic: str, at_least: int, deadline: float) -> int:
    async with asyncio.timeout(deadline):
        # Another process makes the progress; PostgreSQL is where it shows, so poll it.
        while (total := await stored_total(db, topic)) < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return total


async def assert_exactly_once(db: asyncpg.Connection, produced: Produced) -> None:
    events = await db.fetchval("SELECT count(*) FROM tail_events")
    distinct = await db.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset, item"
        " FROM tail_events) AS d"
    )
    assert events == distinct == produced.invocations
    assert await db.fetchval("SELECT count(*) FROM tail_logs") == produced.log_rows
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == produced.poison
    hourly = await db.fetchval("SELECT coalesce(sum(requests), 0) FROM tail_metrics_hourly")
    assert hourly == produced.invocations


async def test_n_events_stored_exactly_once_and_rollups_match(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 3})
    produced = await produce(settings, 3000, seed=11, poison_ratio=0.02)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 90)
    metrics = replicas[0].scrape()
    assert replicas[0].terminate() == 0
    await assert_exactly_once(db, produced)
    await assert_rollups_match_raw_rows(db)
    # Counted once per batch, and exactly: redactions by rule, messages, rows by table.
    assert produced.redactions, "the synthetic stream carries secrets"
    for rule, n in produced.redactions.items():
        assert metrics[f'tailpipe_redactions_total{{rule="{rule}"}}'] == n
    assert metrics["tailpipe_messages_total"] == produced.count
    assert metrics["tailpipe_invocations_total"] == produced.invocations
    assert metrics['tailpipe_rows_written_total{table="tail_logs"}'] == produced.log_rows
    assert metrics['tailpipe_build_info{version="' + __version__ + '"}'] == 1
    # Partitions ahead of need: today and the next two days exist before any event needs them.
    attached = {
        r[0]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        )
    }
    today = datetime.now(UTC).date()
    assert {partition_name("tail_logs", d) for d in ahead(today)} <= attached


async def assert_rollups_match_raw_rows(db: asyncpg.Connection) -> None:
    mismatched = await db.fetch(
        """
        WITH raw AS (
            SELECT date_trunc('hour', ts) AS hour, script, event_type, count(*) AS requests,
                   count(*) FILTER (WHERE outcome <> 'ok') AS errors,
                   coalesce(sum(wall_ms), 0) AS wall_sum, coalesce(max(wall_ms), 0) AS wall_max,
                   coalesce(sum(cpu_ms), 0) AS cpu_sum
            FROM tail_events GROUP BY 1, 2, 3
        )
        SELECT * FROM raw FULL JOIN tail_metrics_hourly m USING (hour, script, event_type)
        WHERE m.requests IS DISTINCT FROM raw.requests OR m.errors IS DISTINCT FROM raw.errors
           OR m.wall_ms_sum IS DISTINCT FROM raw.wall_sum
           OR m.wall_ms_max IS DISTINCT FROM raw.wall_max
           OR m.cpu_ms_sum IS DISTINCT FROM raw.cpu_sum
        """
    )
    assert mismatched == []
    errors = await db.fetch(
        """
        SELECT fingerprint, count(*) AS n FROM tail_logs WHERE level = 'exception'
        GROUP BY 1 EXCEPT SELECT fingerprint, occurrences FROM error_summary
        """
    )
    assert errors == []
    levels = await db.fetch(
        """
        SELECT key, sum(value::bigint) FROM tail_metrics_hourly, jsonb_each_text(levels)
        GROUP BY 1 EXCEPT SELECT level, count(*) FROM tail_logs GROUP BY 1
        """
    )
    assert levels == []


async def test_kill_9_mid_stream_then_restart(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 3})
    produced = await produce(settings, 20_000, seed=12)
    replicas.append(Replica(settings))
    stored = await wait_stored(db, settings.topic, 1, 90)
    replicas[0].kill()
    assert stored < produced.count, "the replica finished before it could be killed"
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 120)
    assert replicas[1].terminate() == 0
    await assert_exactly_once(db, produced)


async def test_two_replicas_one_stopped_mid_stream(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await kafka.ensure_topics(settings, {settings.topic: 6})
    produced = await produce(settings, 20_000, seed=13, poison_ratio=0.01)
    replicas.extend([Replica(settings), Replica(settings)])
    await wait_stored(db, settings.topic, 1, 90)
    assert replicas[0].terminate() == 0
    await wait_stored(db, settings.topic, produced.count, 120)
    assert replicas[1].terminate() == 0
    await assert_exactly_once(db, produced)


def _batch(topic: str, offsets: range) -> Batch:
    transformer = Transformer(Extractor.from_files())
    batch = Batch()
    stream = synth.messages(14, START)
    for offset in offsets:
        message = next(stream)
        transformer.add(batch, topic, 0, offset, START, message.key, message.value)
    return batch


async def test_zombie_flush_is_rejected(migrated: Settings, db: asyncpg.Connection) -> None:
    topic = migrated.topic
    await PartitionManager().ensure(db, store.days_of(_batch(topic, range(0, 20))))
    await store.flush(db, _batch(topic, range(0, 10)), {})
    # The partition moved on: a new owner stored 10..20.
    await store.flush(db, _batch(topic, range(10, 20)), {(topic, 0): 10})
    before = await db.fetchval("SELECT count(*) FROM tail_events")
    # A zombie that still believes the stored offset is 10 flushes its late batch: rejected.
    with pytest.raises(store.PartitionsLost) as lost:
        await store.flush(db, _batch(topic, range(10, 20)), {(topic, 0): 10})
    assert lost.value.lost == {(topic, 0)}
    # And one that never saw a stored offset cannot claim the partition either.
    with pytest.raises(store.PartitionsLost):
        await store.flush(db, _batch(topic, range(0, 10)), {})
    assert await db.fetchval("SELECT count(*) FROM tail_events") == before == 20
    assert await stored_total(db, topic) == 20
