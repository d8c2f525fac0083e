"""Ingest benchmark: one real `tailpipe run` process against its ceilings and a naive baseline.

    .venv/bin/python bench/ingest.py [--messages 1000000] [--naive-messages 20000]

In one run, on a fresh 6-partition topic pre-filled with synthetic trace items (`synth`, about
0.8 KB, 3 log lines) and fresh PostgreSQL schemas (all dropped afterwards):

(a) pipeline: a `tailpipe run` subprocess (default settings except schema, topic and group);
    events/s from its start until the last offset is in `pipeline_offsets` (PostgreSQL is
    polled), plus the steady rate from the first stored offset;
(b) Kafka ceiling: a bare aiokafka consumer that reads the topic and does nothing;
(c) PostgreSQL ceiling: binary COPY of rows already built by the Transformer (a sample,
    copied repeatedly with shifted offsets up to the same message count) into the same tables
    of another fresh schema, in flush-sized transactions;
(d) naive baseline: aiokafka + json + one INSERT per row through asyncpg, on a subset;
(e) peak RSS of the pipeline process (VmHWM from /proc/<pid>/status).

Targets: (a) >= 50% of min(b, c); (a) >= 5x (d); (e) <= 400 MiB. Prints a table and writes
JSON under `.local/bench/`. Exit status 0 whether or not targets are met (the JSON says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from pipeline.kafka import clients, synth  # noqa: E402
from pipeline.kafka.publisher import BulkPublisher  # noqa: E402
from pipeline.postgres import flush  # noqa: E402
from pipeline.postgres.connect import connect, quote_ident  # noqa: E402
from pipeline.postgres.day_partitions import PartitionManager  # noqa: E402
from pipeline.settings import Settings, load  # noqa: E402
from pipeline.transform.batch import Batch  # noqa: E402
from pipeline.transform.extract import Extractor  # noqa: E402
from pipeline.transform.transformer import EVENT_COLUMNS, LOG_COLUMNS, Transformer  # noqa: E402
from tests.conftest import env_of  # noqa: E402

START_MS = 1_764_374_400_000
PARTITIONS = 6
MIB = 1 << 20


def kafka_extensions() -> str | None:
    """None when aiokafka's C record classes are in use, else what is wrong."""
    from aiokafka.record.default_records import DefaultRecordBatch

    module = DefaultRecordBatch.__module__
    return None if module.startswith("aiokafka.record._crecords") else module


def migrate(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "migrate"],
        env={**os.environ, **env_of(settings)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"migrate failed: {done.stderr}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- fill ------------------------------------------------------------------------------------
async def fill(settings: Settings, n: int, seed: int) -> float:
    started = time.perf_counter()
    async with BulkPublisher(settings, settings.topic) as publisher:
        for message in itertools.islice(synth.messages(seed, START_MS), n):
            await publisher.add(message.key, message.value)
    return time.perf_counter() - started


# -- (b) Kafka ceiling -----------------------------------------------------------------------
def _bare_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **clients.client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=32 << 20,
    )


async def _from_start(settings: Settings) -> AIOKafkaConsumer:
    """A started bare consumer assigned every partition of the topic, at its beginning."""
    consumer = _bare_consumer(settings)
    await consumer.start()
    tps = [TopicPartition(settings.topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def kafka_ceiling(settings: Settings, n: int) -> dict[str, Any]:
    consumer = await _from_start(settings)
    try:
        seen = 0
        started = time.perf_counter()
        while seen < n:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=100_000)
            for records in fetched.values():
                seen += len(records)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"messages": seen, "seconds": seconds, "events_per_s": seen / seconds}


# -- (a) + (e) the pipeline ------------------------------------------------------------------
async def stored_total(db: asyncpg.Connection, topic: str) -> int:
    return int(
        await db.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM pipeline_offsets WHERE topic = $1", topic
        )
    )


async def pipeline_run(
    settings: Settings, n: int, timeout_s: float, profile: Path | None = None
) -> dict[str, Any]:
    db = await connect(settings)
    log_path = ROOT / ".local" / "bench" / f"run-{settings.topic}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        proc = _spawn(settings, log_path)
        spy = _py_spy(proc.pid, profile) if profile else None
        first_at: float | None = None
        first_total = 0
        peak: float | None = None
        total = 0
        try:
            while True:
                total = await stored_total(db, settings.topic)
                now = time.perf_counter()
                peak = rss_peak_mib(proc.pid) or peak
                if total and first_at is None:
                    first_at, first_total = now, total
                if total >= n:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"tailpipe run exited {proc.returncode}; see {log_path}")
                if now - started > timeout_s:
                    raise SystemExit(f"timed out at {total}/{n} stored; see {log_path}")
                await asyncio.sleep(0.05)
            done_at = time.perf_counter()
            peak = rss_peak_mib(proc.pid) or peak
            cpu = cpu_seconds(proc.pid)
        finally:
            _stop(proc, spy)
        events = await db.fetchval("SELECT count(*) FROM tail_events")
        logs = await db.fetchval("SELECT count(*) FROM tail_logs")
    finally:
        await db.close()
    seconds = done_at - started
    steady = (
        (total - first_total) / (done_at - first_at)
        if first_at is not None and done_at > first_at
        else None
    )
    return {
        "messages": total,
        "seconds": seconds,
        "events_per_s": total / seconds,
        "steady_events_per_s": steady,
        "first_offset_stored_after_s": (first_at - started) if first_at else None,
        "tail_events_rows": events,
        "tail_logs_rows": logs,
        "peak_rss_mib": peak,
        "cpu_seconds": cpu,
        "cpu_share": cpu / seconds if cpu is not None else None,
        "exit_code": proc.returncode,
        "log": str(log_path.relative_to(ROOT)),
    }


def _spawn(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`tailpipe run` with default settings but for schema, topic and group."""
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run"],
            env={**os.environ, **env_of(settings)},
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes], spy: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (flush, exit 0), as an orchestrator would; py-spy first, so it writes."""
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample the pipeline with py-spy (`pip install py-spy`): an .svg flame graph, or raw
    collapsed stacks for any other suffix."""
    kind = "flamegraph" if out.suffix == ".svg" else "raw"
    command = ["py-spy", "record", "-r", "200", "-f", kind, "-o", str(out), "--pid", str(pid)]
    spy = Path(sys.executable).parent / "py-spy"
    if spy.exists():
        command[0] = str(spy)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- (c) PostgreSQL ceiling ------------------------------------------------------------------
def sample_batch(topic: str, sample: int, seed: int) -> Batch:
    transformer = Transformer(Extractor.from_files())
    batch = Batch()
    for offset, message in enumerate(itertools.islice(synth.messages(seed, START_MS), sample)):
        transformer.add(
            batch, topic, offset % PARTITIONS, offset, START_MS, message.key, message.value
        )
    return batch


async def pg_ceiling(
    settings: Settings, n: int, batch_messages: int, seed: int, sample: int
) -> dict[str, Any]:
    """COPY n messages' worth of prebuilt rows, batch_messages per transaction."""
    topic = settings.topic
    base = sample_batch(topic, sample, seed)
    events = [row for part in base.parts.values() for row in part.events]
    logs = [row for part in base.parts.values() for row in part.logs]
    events.sort(key=lambda r: r[20])  # by kafka_offset
    logs.sort(key=lambda r: r[13])
    offset_col_e, offset_col_l = (
        EVENT_COLUMNS.index("kafka_offset"),
        LOG_COLUMNS.index("kafka_offset"),
    )
    conn = await connect(settings)
    try:
        await PartitionManager().ensure(conn, flush.days_of(base))
        copied = rows = 0
        busy = 0.0
        while copied < n:
            take = min(batch_messages, n - copied)
            lo = copied % sample
            hi = min(lo + take, sample)
            take = hi - lo
            shift = (copied // sample) * sample
            # Rows of messages [lo, hi) of the sample, their offsets moved past earlier copies
            # (outside the timed part: building rows is the transformer's job, not COPY's).
            ev = _slice_rows(events, offset_col_e, lo, hi, shift)
            lg = _slice_rows(logs, offset_col_l, lo, hi, shift)
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("tail_events", records=ev, columns=EVENT_COLUMNS)
                await conn.copy_records_to_table("tail_logs", records=lg, columns=LOG_COLUMNS)
            busy += time.perf_counter() - t0
            copied += take
            rows += len(ev) + len(lg)
    finally:
        await conn.close()
    return {
        "messages": copied,
        "rows": rows,
        "seconds": busy,
        "events_per_s": copied / busy,
        "rows_per_s": rows / busy,
        "batch_messages": batch_messages,
    }


def _slice_rows(
    rows: list[tuple[Any, ...]], col: int, lo: int, hi: int, shift: int
) -> list[tuple[Any, ...]]:
    import bisect

    start = bisect.bisect_left(rows, lo, key=lambda r: r[col])
    end = bisect.bisect_left(rows, hi, key=lambda r: r[col])
    if not shift:
        return rows[start:end]
    return [(*r[:col], r[col] + shift, *r[col + 1 :]) for r in rows[start:end]]


# -- (d) naive baseline ----------------------------------------------------------------------
_NAIVE_EVENT = """INSERT INTO tail_events (ts, script, event_type, outcome, method, url, status,
    cpu_ms, wall_ms, log_count, exception_count, truncated, script_version, source, extra,
    topic, kafka_partition, kafka_offset, item)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'trace', $14, $15, $16, $17, 0)"""
_NAIVE_LOG = """INSERT INTO tail_logs (ts, script, event_type, outcome, level, message, topic,
    kafka_partition, kafka_offset, item, seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10)"""


async def naive(settings: Settings, n: int, topic: str) -> dict[str, Any]:
    consumer = await _from_start(settings)
    conn = await connect(settings)
    try:
        seen = 0
        started = time.perf_counter()
        while seen < n:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=500)
            for tp, records in fetched.items():
                for r in records:
                    if seen >= n:
                        break
                    seen += 1
                    item = json.loads(r.value)
                    ts = datetime.fromtimestamp(item["eventTimestamp"] / 1000, UTC)
                    event = item.get("event") or {}
                    request = event.get("request") or {}
                    kind = "fetch" if request else "other"
                    context = (ts, item["scriptName"], kind, item["outcome"])
                    await conn.execute(
                        _NAIVE_EVENT,
                        *context,
                        request.get("method"),
                        request.get("url"),
                        (event.get("response") or {}).get("status"),
                        item.get("cpuTime"),
                        item.get("wallTime"),
                        len(item["logs"]),
                        len(item["exceptions"]),
                        item.get("truncated", False),
                        (item.get("scriptVersion") or {}).get("id"),
                        json.dumps(request.get("headers")) if request else None,
                        topic,
                        tp.partition,
                        r.offset,
                    )
                    for seq, line in enumerate(item["logs"]):
                        await conn.execute(
                            _NAIVE_LOG,
                            datetime.fromtimestamp(line["timestamp"] / 1000, UTC),
                            *context[1:],
                            line["level"],
                            " ".join(
                                m if isinstance(m, str) else json.dumps(m) for m in line["message"]
                            ),
                            topic,
                            tp.partition,
                            r.offset,
                            seq,
                        )
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
        await consumer.stop()
    return {"messages": seen, "seconds": seconds, "events_per_s": seen / seconds}


# -- cleanup ---------------------------------------------------------------------------------
async def drop_schemas(base: Settings, schemas: list[str]) -> None:
    conn = await connect(base)
    try:
        for name in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
    finally:
        await conn.close()


async def drop_kafka(settings: Settings, topics: list[str], groups: list[str]) -> None:
    admin = AIOKafkaAdminClient(**clients.client_options(settings))
    await admin.start()
    try:
        with contextlib.suppress(Exception):
            await admin.delete_topics(topics)
        with contextlib.suppress(Exception):
            await admin.delete_consumer_groups(groups)
    finally:
        await admin.close()


# -- report ----------------------------------------------------------------------------------
def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def report(result: dict[str, Any]) -> str:
    a, b, c, d = (result[k] for k in ("pipeline", "kafka_ceiling", "pg_ceiling", "naive"))
    t = result["targets"]
    lines = [
        f"tailpipe ingest benchmark: {result['messages']:,} messages on {PARTITIONS} partitions",
        "",
        f"{'':4}{'measure':<42}{'events/s':>12}{'seconds':>10}",
        f"{'(a)':4}{'pipeline (tailpipe run, end to end)':<42}"
        f"{fmt(a['events_per_s']):>12}{a['seconds']:>10.1f}",
        f"{'':4}{'  steady, from first stored offset':<42}{fmt(a['steady_events_per_s']):>12}",
        f"{'(b)':4}{'Kafka ceiling (bare aiokafka)':<42}"
        f"{fmt(b['events_per_s']):>12}{b['seconds']:>10.1f}",
        f"{'(c)':4}{'PostgreSQL ceiling (binary COPY, built rows)':<42}"
        f"{fmt(c['events_per_s']):>12}{c['seconds']:>10.1f}",
        f"{'(d)':4}{'naive (json + INSERT per row)':<42}"
        f"{fmt(d['events_per_s']):>12}{d['seconds']:>10.1f}",
        f"{'(e)':4}{'pipeline peak RSS (VmHWM)':<42}{fmt(a['peak_rss_mib'], ' MiB'):>12}",
        f"{'':4}{'pipeline CPU (one core = 100%)':<42}{fmt(100 * (a['cpu_share'] or 0), '%'):>12}",
        "",
        f"(a) / min(b, c) = {t['a_over_min_bc']:.0%}   (target >= 50%)  "
        + ("ok" if t["a_over_min_bc_ok"] else "SHORT"),
        f"(a) / (d)       = {t['a_over_d']:.1f}x   (target >= 5x)  "
        + ("ok" if t["a_over_d_ok"] else "SHORT"),
        f"peak RSS        = {fmt(a['peak_rss_mib'], ' MiB')}   (target <= 400 MiB)  "
        + ("ok" if t["rss_ok"] else "SHORT"),
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    problem = kafka_extensions()
    if problem is not None:
        raise SystemExit(f"aiokafka C extensions not loaded (DefaultRecordBatch from {problem})")
    run_id = uuid.uuid4().hex[:8]
    base = load()
    run = replace(
        base,
        postgres_schema=f"bench_{run_id}",
        topic=f"bench_events_{run_id}",
        alerts_topic=f"bench_alerts_{run_id}",
        group=f"bench_{run_id}",
    )
    copy = replace(run, postgres_schema=f"bench_{run_id}_copy")
    result: dict[str, Any] = {
        "run_id": run_id,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "partitions": PARTITIONS,
        "schemas": [run.postgres_schema, copy.postgres_schema],
        "topic": run.topic,
    }
    try:
        migrate(run)
        migrate(copy)
        if args.schema_sql:  # e.g. an index variant, to measure before writing a migration
            for schema in (run, copy):
                conn = await connect(schema)
                try:
                    await conn.execute(args.schema_sql)
                finally:
                    await conn.close()
        await clients.ensure_topics(run, {run.topic: PARTITIONS})
        say(f"filling {run.topic} with {args.messages:,} messages")
        seconds = await fill(run, args.messages, args.seed)
        result["fill"] = {"seconds": seconds, "events_per_s": args.messages / seconds}
        say(f"  {args.messages / seconds:,.0f} messages/s")
        if not args.only_pipeline:
            say("(b) Kafka ceiling")
            result["kafka_ceiling"] = await kafka_ceiling(run, args.messages)
        say("(a) pipeline")
        result["pipeline"] = await pipeline_run(run, args.messages, args.timeout, args.profile)
        if args.only_pipeline:
            return result
        say("(c) PostgreSQL ceiling")
        result["pg_ceiling"] = await pg_ceiling(
            copy, args.messages, args.copy_batch, args.seed, min(args.sample, args.messages)
        )
        say("(d) naive baseline")
        result["naive"] = await naive(copy, min(args.naive_messages, args.messages), "naive")
    finally:
        if not args.keep:
            await drop_schemas(base, [run.postgres_schema, copy.postgres_schema])
            await drop_kafka(base, [run.topic], [run.group])
    a = result["pipeline"]["events_per_s"]
    ceiling = min(result["kafka_ceiling"]["events_per_s"], result["pg_ceiling"]["events_per_s"])
    peak = result["pipeline"]["peak_rss_mib"]
    result["targets"] = {
        "a_over_min_bc": a / ceiling,
        "a_over_min_bc_ok": a >= 0.5 * ceiling,
        "a_over_d": a / result["naive"]["events_per_s"],
        "a_over_d_ok": a >= 5 * result["naive"]["events_per_s"],
        "rss_ok": peak is not None and peak <= 400,
    }
    return result


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000, help="topic size")
    parser.add_argument("--naive-messages", type=int, default=20_000, help="(d) subset")
    parser.add_argument("--sample", type=int, default=50_000, help="(c) rows built once")
    parser.add_argument("--copy-batch", type=int, default=5_000, help="(c) messages per COPY")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800, help="(a) seconds at most")
    parser.add_argument("--profile", type=Path, help="py-spy the pipeline into this file")
    parser.add_argument("--only-pipeline", action="store_true", help="skip (b), (c), (d)")
    parser.add_argument("--schema-sql", help="SQL run in the fresh schemas after migrating")
    parser.add_argument("--keep", action="store_true", help="keep schemas and topic")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    outcome = asyncio.run(main(arguments))
    if arguments.only_pipeline:
        print(json.dumps(outcome["pipeline"], indent=2))
        raise SystemExit(0)
    arguments.out.mkdir(parents=True, exist_ok=True)
    path = arguments.out / f"ingest-{outcome['started'].replace(':', '')}-{outcome['run_id']}.json"
    path.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    print(report(outcome))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
