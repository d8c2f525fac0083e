"""Real `tailpipe run` replicas for the integration tests, and what to check them against."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from pipeline.deadletters.record import decode_object
from pipeline.deadletters.store import open_store
from pipeline.errors import DecodeError
from pipeline.formats.decode import decode
from pipeline.formats.invocation import Invocation
from pipeline.kafka import synth
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer
from tests.conftest import ROOT, env_of, free_port

START = 1_764_374_400_000


@dataclass
class Produced:
    count: int
    invocations: int
    log_rows: int
    poison: int
    redactions: Counter[str]
    rejected: int = 0
    """Well-formed messages the decoder refuses as unstorable (synth's `reject_ratio`)."""
    refused: int = 0
    """Messages whose rows PostgreSQL refuses under `REFUSING_CHECK` (found by bisection)."""

    @property
    def dead(self) -> int:
        return self.poison + self.rejected + self.refused

    def __add__(self, other: Produced) -> Produced:
        return Produced(
            self.count + other.count, self.invocations + other.invocations,
            self.log_rows + other.log_rows, self.poison + other.poison,
            self.redactions + other.redactions, self.rejected + other.rejected,
            self.refused + other.refused,
        )  # fmt: skip


REFUSING_CHECK = (
    "ALTER TABLE tail_events ADD CONSTRAINT refused_by_test"
    " CHECK (wall_ms IS NULL OR wall_ms % 101 <> 7)"
)
"""A constraint about 2% of synthetic messages break, as a bad migration would: PostgreSQL
refuses their rows, and the flush's bisection must find exactly those messages."""


def refused_by_check(invocations: list[Invocation]) -> bool:
    return any(i.wall_ms is not None and i.wall_ms % 101 == 7 for i in invocations)


async def produce(
    settings: Settings,
    n: int,
    seed: int,
    poison_ratio: float = 0.0,
    reject_ratio: float = 0.0,
    *,
    start_ms: int = START,
    step_ms: int = 7,
    refusing: bool = False,
) -> Produced:
    """Publish n synthetic messages and count, independently of the pipeline, what they hold
    (the redactions as the transform counts them: the rules are tested on their own).
    `refusing`: the schema has `REFUSING_CHECK`, so the messages breaking it count as refused."""
    invocations = log_rows = poison = rejected = refused = 0
    transformer = Transformer(Extractor.from_files())
    batch = Batch()
    async with BulkPublisher(settings, settings.topic) as publisher:
        stream = synth.messages(
            seed, start_ms, poison_ratio=poison_ratio, reject_ratio=reject_ratio, step_ms=step_ms
        )
        for offset, message in enumerate(itertools.islice(stream, n)):
            await publisher.add(message.key, message.value)
            try:
                decoded = decode(message.value)
            except DecodeError:
                rejected += message.rejected
                poison += message.poison
                assert message.rejected or message.poison, "synth made an undecodable message"
                continue
            if refusing and refused_by_check(decoded):
                refused += 1
                continue
            transformer.add(batch, "t", 0, offset, START, message.key, message.value)
            invocations += len(decoded)
            log_rows += sum(len(i.logs) + len(i.exceptions) for i in decoded)
    return Produced(n, invocations, log_rows, poison, batch.redactions, rejected, refused)


class Replica:
    """A real `tailpipe run` process."""

    def __init__(self, settings: Settings, **extra_env: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            **env_of(settings),
            **extra_env,
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

    def get(self, path: str) -> int:
        """The HTTP status of a GET on the replica's status port."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as refused:
            return int(refused.code)

    def readiness(self) -> dict[str, Any]:
        """The replica's /readyz body, ready or not."""
        url = f"http://127.0.0.1:{self.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read()
        except urllib.error.HTTPError as not_ready:
            body = not_ready.read()
        except urllib.error.URLError as down:  # still starting: not listening yet
            return {"ready": False, "unreachable": str(down.reason)}
        state: dict[str, Any] = orjson.loads(body)
        return state

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-6000:]

    def log_lines(self) -> list[dict[str, Any]]:
        """Its stderr, one JSON object per line (the format when not on a terminal)."""
        return [orjson.loads(line) for line in Path(self.log.name).read_text().splitlines()]

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
    dead = await db.fetchval("SELECT coalesce(sum(messages), 0) FROM dead_letters")
    assert dead == produced.dead
    hourly = await db.fetchval(
        "SELECT coalesce(sum(requests), 0) FROM tail_metrics_hourly WHERE event_type <> '*'"
    )
    assert hourly == produced.invocations


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
        SELECT * FROM raw
        FULL JOIN (SELECT * FROM tail_metrics_hourly WHERE event_type <> '*') AS m
             USING (hour, script, event_type)
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
        WHERE event_type <> '*' GROUP BY 1 EXCEPT SELECT level, count(*) FROM tail_logs GROUP BY 1
        """
    )
    assert levels == []
    # The totals rows sum the detailed ones: per script, and over every script.
    totals = await db.fetch(
        """
        SELECT hour, s, sum(requests), sum(errors), sum(wall_ms_sum) FROM (
            SELECT hour, script AS s, requests, errors, wall_ms_sum FROM tail_metrics_hourly
            WHERE event_type <> '*'
            UNION ALL
            SELECT hour, '*', requests, errors, wall_ms_sum FROM tail_metrics_hourly
            WHERE event_type <> '*'
        ) AS d GROUP BY 1, 2
        EXCEPT
        SELECT hour, script, requests, errors, wall_ms_sum FROM tail_metrics_hourly
        WHERE event_type = '*'
        """
    )
    assert totals == []
    error_hours = await db.fetch(
        """
        SELECT date_trunc('hour', ts), fingerprint, count(*) FROM tail_logs
        WHERE level = 'exception' GROUP BY 1, 2
        EXCEPT SELECT hour, fingerprint, occurrences FROM error_hourly
        """
    )
    assert error_hours == []


async def dead_letters_in_store(
    settings: Settings, db: asyncpg.Connection
) -> Counter[tuple[int, int]]:
    """(partition, offset) of every dead letter in every indexed object, with its count."""
    found: Counter[tuple[int, int]] = Counter()
    keys = [r[0] for r in await db.fetch("SELECT object_key FROM dead_letters")]
    async with open_store(settings) as store:
        for key in keys:
            for _, partition, letter in decode_object(await store.get(key)):
                found[(partition, letter.offset)] += 1
    return found


async def stored_messages(db: asyncpg.Connection) -> set[tuple[int, int]]:
    rows = await db.fetch("SELECT DISTINCT kafka_partition, kafka_offset FROM tail_events")
    return {(r[0], r[1]) for r in rows}
