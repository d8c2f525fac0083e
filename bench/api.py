"""Query API benchmark: each endpoint's latency over 5,000,000+ log rows spanning 30 days.

    .venv/bin/python bench/api.py [--messages 1700000] [--requests 50] [--reload]

Data goes in through the real pipeline, so the rollups are what production would have:
synthetic trace items (`synth`, about 3 log lines each) with event times spread evenly over
the 30 days up to now are published to a fresh 6-partition topic and stored by one
`tailpipe run`, into the schema `bench_api` (`--schema`), which is kept: a later run reuses it
when it holds >= 5,000,000 `tail_logs` rows, unless `--reload`. The data ends where the load
did, so the 24 h window empties as the schema ages: `--reload` after a day or so.

Then a `tailpipe api` process serves that schema, and one client (sequential, keep-alive)
asks each endpoint at hours=24 and hours=720: 5 warm-up requests, then `--requests` timed ones,
each of which must answer 200. Targets: p95 <= 100 ms at 24 h, <= 300 ms at 720 h.

Last, `EXPLAIN (ANALYZE, BUFFERS)` of the SQL behind the recent-logs requests, with the values
they send. Prints a table and a line per plan; writes `api-<time>.json` and
`api-plans-<time>.txt` under `.local/bench/`. Exit status 0 whether or not targets are met
(the JSON says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from bench.prepare import drop_kafka, migrate  # noqa: E402
from pipeline.api import logs as recent_sql  # noqa: E402
from pipeline.errors import DependencyError  # noqa: E402
from pipeline.kafka import clients, synth  # noqa: E402
from pipeline.kafka.publisher import BulkPublisher  # noqa: E402
from pipeline.postgres import search_index  # noqa: E402
from pipeline.postgres.connect import connect, quote_ident  # noqa: E402
from pipeline.settings import Settings, load  # noqa: E402
from tests.conftest import env_of  # noqa: E402

SCHEMA = "bench_api"
TOKEN = "bench-api-read-token-0123456789"
DAYS = 30
PARTITIONS = 6
MIN_ROWS = 5_000_000
WARMUP = 5
TARGETS_MS = {24: 100.0, 720: 300.0}
STALE_AFTER = timedelta(hours=6)
"""Newer data than this is wanted: past it the 24 h window holds noticeably fewer rows."""

# (path, extra query parameters). "retrying" is in about 0.4% of synthetic log lines (the
# "retrying https://..." secret shape): a rare word, the case a text search index is for.
ENDPOINTS: list[tuple[str, dict[str, str]]] = [
    ("/api/logs/recent", {}),
    ("/api/logs/recent", {"level": "error"}),
    ("/api/logs/recent", {"q": "retrying"}),
    ("/api/logs/recent", {"script": "billing-worker", "level": "warn"}),
    ("/api/logs/errors", {}),
    ("/api/logs/performance", {}),
    ("/api/logs/performance", {"script": "api-gateway"}),
    ("/api/logs/scripts", {}),
    ("/api/logs/errors", {"script": "api-gateway"}),
    ("/api/logs/api-usage", {}),
    ("/api/logs/scan-activity", {}),
    ("/api/logs/critical-alerts", {}),
    ("/api/logs/critical-alerts", {"script": "api-gateway"}),
]
RECENT_LIMIT = 100  # the route's default `limit`


def say(text: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)


def bench_settings(schema: str) -> Settings:
    base = load()
    return replace(
        base,
        postgres_schema=schema,
        # Dead letters of this data (none expected) must not mix with the default prefix.
        dlq_url=f"s3://{base.dlq_bucket}/{schema}",
        api_read_tokens=(TOKEN,),
    )


def out_dir(args: argparse.Namespace) -> Path:
    path: Path = args.out
    path.mkdir(parents=True, exist_ok=True)
    return path


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- data ------------------------------------------------------------------------------------
async def data_state(settings: Settings) -> dict[str, Any]:
    """Exact row count and time range of tail_logs in the schema (zero when not migrated)."""
    conn = await connect(settings)
    try:
        if not await conn.fetchval("SELECT to_regclass('tail_logs') IS NOT NULL"):
            return {"log_rows": 0, "first_ts": None, "last_ts": None}
        row = await conn.fetchrow("SELECT count(*) AS n, min(ts), max(ts) FROM tail_logs")
        assert row is not None  # an aggregate without GROUP BY always gives one row
        return {"log_rows": int(row["n"]), "first_ts": row["min"], "last_ts": row["max"]}
    finally:
        await conn.close()


async def applied_migrations(settings: Settings) -> list[int]:
    conn = await connect(settings)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [int(r["version"]) for r in rows]
    finally:
        await conn.close()


async def drop_earlier_loads(settings: Settings) -> None:
    """Delete the topics and groups of earlier loads (`<schema>_<digits>`), finished or not,
    and the schema: a load always starts from nothing, and Kafka keeps no 1.4 GB leftovers."""
    admin = AIOKafkaAdminClient(**clients.client_options(settings))
    await admin.start()
    try:
        pattern = re.compile(rf"{re.escape(settings.postgres_schema)}_\d+")
        topics = [t for t in await admin.list_topics() if pattern.fullmatch(t)]
    finally:
        await admin.close()
    if topics:
        say(f"  deleting earlier load topics {', '.join(sorted(topics))}")
        await drop_kafka(settings, topics, topics)  # each load's group is named as its topic
    conn = await connect(load())
    try:
        schema = quote_ident(settings.postgres_schema)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def publish(settings: Settings, messages: int, seed: int) -> float:
    """Publish `messages` synthetic items whose event times step evenly from 30 days ago to
    now (so both windows measured hold data); returns the seconds taken."""
    now_ms = int(time.time() * 1000)
    span_ms = DAYS * 86_400_000
    step_ms = span_ms // messages
    stream = synth.messages(seed, now_ms - span_ms, step_ms=step_ms)
    say(
        f"  publishing {messages:,} messages to {settings.topic} ({step_ms} ms apart in event time)"
    )
    started = time.perf_counter()
    every = max(1, messages // 10)
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n, message in enumerate(itertools.islice(stream, messages), 1):
            await publisher.add(message.key, message.value)
            if n % every == 0 and n < messages:
                elapsed = time.perf_counter() - started
                say(f"  published {n:>10,} / {messages:,}  {n / elapsed:>9,.0f} msg/s")
    seconds = time.perf_counter() - started
    say(f"  published {messages:>10,} / {messages:,}  in {seconds:.0f} s (acknowledged)")
    return seconds


def spawn_replica(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """One `tailpipe run` for the bench schema, topic and group; output kept for a post-mortem."""
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run"],
            # Metrics on any free port: a replica of the running stack may hold the default.
            env={**os.environ, **env_of(settings), "TAILPIPE_METRICS_PORT": "0"},
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], grace: float = 60) -> None:
    """SIGTERM (a replica flushes, the API drains), then SIGKILL past the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class StoredCounter:
    """Reads how many messages `pipeline_offsets` accounts for, reconnecting as needed: the
    local stack is shared, and other runs (the outage tests) restart PostgreSQL under us."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: asyncpg.Connection | None = None

    async def read(self) -> int | None:
        """The count, or None while PostgreSQL does not answer."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self._settings)
            return int(
                await self._conn.fetchval(
                    "SELECT coalesce(sum(next_offset), 0) FROM pipeline_offsets WHERE topic = $1",
                    self._settings.topic,
                )
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DependencyError):
            await self.close()
            return None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


async def store(settings: Settings, messages: int, timeout_s: float, log_path: Path) -> float:
    """Run one replica until `pipeline_offsets` accounts for every message; returns seconds."""
    counter = StoredCounter(settings)
    started = time.perf_counter()
    replica = spawn_replica(settings, log_path)
    say(f"  tailpipe run (pid {replica.pid}, output in {shown(log_path)})")
    try:
        reported = started
        stored = 0
        while True:
            now = time.perf_counter()
            count = await counter.read()
            if count is None and now - reported >= 10:
                say("  PostgreSQL does not answer; the replica retries, so does this")
                reported = now
            stored = count if count is not None else stored
            if stored >= messages:
                break
            if replica.poll() is not None:
                raise SystemExit(f"tailpipe run exited {replica.returncode}; see {log_path}")
            if now - started > timeout_s:
                raise SystemExit(f"timed out at {stored:,}/{messages:,} stored; see {log_path}")
            if count is not None and now - reported >= 10:
                rate = stored / (now - started)
                eta = (messages - stored) / rate if rate else math.inf
                say(
                    f"  stored    {stored:>10,} / {messages:,}  {rate:>9,.0f} msg/s"
                    f"  ~{eta:.0f} s to go"
                )
                reported = now
            await asyncio.sleep(0.5)
        seconds = time.perf_counter() - started
        say(f"  stored    {messages:>10,} / {messages:,}  in {seconds:.0f} s")
    finally:
        # Stopped on success and on any error alike: never leave a replica consuming.
        stop(replica)
        await counter.close()
    return seconds


async def vacuum_analyze(settings: Settings) -> float:
    """VACUUM ANALYZE every table of the schema: fresh statistics for the planner and a
    visibility map for index-only scans, as autovacuum would eventually give production."""
    conn = await connect(settings)
    started = time.perf_counter()
    try:
        # Partitioned parents recurse into their partitions, so only top-level tables.
        tables = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " ORDER BY c.relname",
            settings.postgres_schema,
        )
        for table in tables:
            await conn.execute(f"VACUUM (ANALYZE) {quote_ident(table['relname'])}")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def load_data(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Drop and re-create the schema, publish, store with one replica, VACUUM ANALYZE."""
    started = time.perf_counter()
    await drop_earlier_loads(settings)
    migrate(settings)
    # A topic and group per load, named for the schema: earlier loads' offsets cannot leak in.
    name = f"{settings.postgres_schema}_{int(time.time())}"
    settings = replace(settings, topic=name, group=name)
    await clients.ensure_topics(settings, {settings.topic: PARTITIONS})
    try:
        publish_s = await publish(settings, args.messages, args.seed)
        log_path = out_dir(args) / f"api-load-{name}.log"
        store_s = await store(settings, args.messages, args.timeout, log_path)
    finally:
        # The rows are in PostgreSQL now (or the load failed and is redone from scratch).
        await drop_kafka(settings, [settings.topic], [settings.group])
    say("  VACUUM ANALYZE")
    vacuum_s = await vacuum_analyze(settings)
    return {
        "messages": args.messages,
        "topic": settings.topic,
        "publish_s": round(publish_s, 1),
        "store_s": round(store_s, 1),
        "vacuum_analyze_s": round(vacuum_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }


# -- serve -----------------------------------------------------------------------------------
def free_port() -> int:
    """A port the kernel just handed out: free unless someone takes it in the next moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def api_server(settings: Settings, log_path: Path, ready_s: float = 30) -> Iterator[str]:
    """`tailpipe api` on a free local port, yielding its base URL once /readyz answers 200;
    stopped on leaving, whatever happened."""
    port = free_port()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "api", "--host", "127.0.0.1"],
            env={
                **os.environ,
                **env_of(settings),
                "TAILPIPE_API_PORT": str(port),
                "TAILPIPE_API_READ_TOKENS": TOKEN,
            },
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"tailpipe api exited {proc.returncode}; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"tailpipe api not ready after {ready_s:.0f} s; see {log_path}")
            time.sleep(0.1)
        say(f"tailpipe api ready on {base} (pid {proc.pid}, output in {shown(log_path)})")
        yield base
    finally:
        stop(proc, grace=30)


# -- measure ---------------------------------------------------------------------------------
def label(path: str, extra: dict[str, str]) -> str:
    return path + ("?" + "&".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def nearest_rank(sorted_ms: list[float], q: float) -> float:
    """The q-quantile by nearest rank: a latency that was actually observed."""
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]


def measure(base: str, requests: int) -> list[dict[str, Any]]:
    """One client, one keep-alive connection, requests strictly one after another: the
    latency a dashboard user sees, without contention between requests."""
    results = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for (path, extra), hours in itertools.product(ENDPOINTS, TARGETS_MS):
            params = {"hours": str(hours), **extra}
            times: list[float] = []
            for i in range(WARMUP + requests):
                started = time.perf_counter()
                response = client.get(path, params=params)
                elapsed_ms = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise SystemExit(
                        f"{path} {params}: {response.status_code} {response.text[:500]}"
                    )
                if i >= WARMUP:
                    times.append(elapsed_ms)
            times.sort()
            p95 = nearest_rank(times, 0.95)
            results.append(
                {
                    "endpoint": label(path, extra),
                    "hours": hours,
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(p95, 1),
                    "max_ms": round(times[-1], 1),
                    "target_ms": TARGETS_MS[hours],
                    "ok": p95 <= TARGETS_MS[hours],
                    "response_bytes": len(response.content),
                }
            )
            say(f"  {label(path, extra):<52} {hours:>4} h  p95 {p95:7.1f} ms")
    return results


# -- plans -----------------------------------------------------------------------------------
def recent_query(hours: int, extra: dict[str, str], now: datetime) -> tuple[str, list[Any]]:
    """The SQL and arguments GET /api/logs/recent sends for these parameters (first page),
    built from the route's own fragments so the plan is of the query actually served."""
    args: list[Any] = [now - timedelta(hours=hours), now]
    where = ["ts >= $1", "ts <= $2"]
    for name in ("level", "script", "outcome", "q"):  # the route's order of filters
        if name in extra:
            args.append(recent_sql._like(extra[name]) if name == "q" else extra[name])
            where.append(recent_sql._FILTERS[name].format(len(args)))
    args.append(RECENT_LIMIT + 1)
    sql = (
        f"SELECT {recent_sql._COLUMNS} FROM tail_logs WHERE {' AND '.join(where)}"
        f" {recent_sql._ORDER} LIMIT ${len(args)}"
    )
    return sql, args


_SCAN = re.compile(
    r"(?:^|->)\s*(?P<kind>(?:Parallel )?(?:Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan))"
    r"(?: Backward)?(?: using (?P<index>\S+))? on (?P<rel>\S+)"
)


def summarize_plan(lines: list[str]) -> dict[str, Any]:
    """What a reader checks first: time, whether an index did the work, how much was read
    (buffers of the root node), and rows fetched only to be thrown away."""
    text = "\n".join(lines)
    kinds: dict[str, int] = {}
    indexes: set[str] = set()
    executed = never = 0
    for line in lines:
        found = _SCAN.search(line)
        if found is None:
            continue
        if "(never executed)" in line:
            never += 1
            continue
        executed += 1
        kinds[found["kind"]] = kinds.get(found["kind"], 0) + 1
        name = found["index"] or found["rel"]
        if "Index" in found["kind"]:
            # Partition indexes are named tail_logs_pYYYYMMDD_<what>_idx: keep only <what>.
            indexes.add(re.sub(r"^tail_logs_p\d{8}_", "", name))
    buffers = re.search(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?", text)
    execution = re.search(r"Execution Time: ([\d.]+) ms", text)
    removed = sum(
        int(n) for n in re.findall(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", text)
    )
    return {
        "execution_ms": float(execution[1]) if execution else None,
        "uses_index": any("Index" in kind for kind in kinds),
        "indexes": sorted(indexes),
        "scans": kinds,
        "scans_executed": executed,
        "scans_never_executed": never,
        "seq_scans": sum(n for kind, n in kinds.items() if "Seq Scan" in kind),
        "buffers_hit": int(buffers[1]) if buffers and buffers[1] else 0,
        "buffers_read": int(buffers[2]) if buffers and buffers[2] else 0,
        "rows_removed": removed,
    }


async def explain_recent(settings: Settings) -> tuple[list[str], list[dict[str, Any]]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each recent-logs request measured, after the measurement
    (so on a cache as warm as the requests had)."""
    conn = await connect(settings)
    # The API's pool plans every query for its values (pipeline/api/app.py); so do these.
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    blocks: list[str] = []
    summaries: list[dict[str, Any]] = []
    try:
        now = datetime.now(UTC)
        for (path, extra), hours in itertools.product(ENDPOINTS, TARGETS_MS):
            if path != "/api/logs/recent":
                continue
            sql, args = recent_query(hours, extra, now)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
            lines = [r[0] for r in rows]
            name = label(path, extra)
            shown_args = ", ".join(
                a.isoformat() if isinstance(a, datetime) else repr(a) for a in args
            )
            blocks.append(f"-- {name}, hours={hours}\n-- {sql}\n-- args: {shown_args}\n")
            blocks[-1] += "\n".join(lines)
            summaries.append({"endpoint": name, "hours": hours, **summarize_plan(lines)})
    finally:
        await conn.close()
    return blocks, summaries


# -- report ----------------------------------------------------------------------------------
def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'endpoint':<52} {'hours':>5} {'p50 ms':>8} {'p95 ms':>8} {'target':>7}  ok"]
    for r in results:
        lines.append(
            f"{r['endpoint']:<52} {r['hours']:>5} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}"
            f" {r['target_ms']:>7.0f}  {'ok' if r['ok'] else 'MISS'}"
        )
    return "\n".join(lines)


def plan_lines(summaries: list[dict[str, Any]]) -> str:
    lines = []
    for s in summaries:
        scans = ", ".join(f"{kind} x{n}" for kind, n in sorted(s["scans"].items()))
        lines.append(
            f"{s['endpoint']:<52} {s['hours']:>4} h  {s['execution_ms']:>7.2f} ms  "
            f"index: {'yes' if s['uses_index'] else 'NO '} ({', '.join(s['indexes']) or '-'})  "
            f"scans: {scans or '-'} (+{s['scans_never_executed']} never run)  "
            f"buffers: {s['buffers_hit']:,} hit {s['buffers_read']:,} read  "
            f"rows removed: {s['rows_removed']:,}"
        )
    return "\n".join(lines)


async def build_search_index(settings: Settings) -> list[str]:
    conn = await connect(settings)
    try:
        return await search_index.index_closed_days(conn, datetime.now(UTC))
    finally:
        await conn.close()


def main(args: argparse.Namespace) -> int:
    settings = bench_settings(args.schema)
    started = datetime.now(UTC)
    state = asyncio.run(data_state(settings))
    loaded: dict[str, Any] | None = None
    if args.reload or state["log_rows"] < MIN_ROWS:
        why = "--reload" if args.reload else f"{state['log_rows']:,} rows < {MIN_ROWS:,}"
        say(f"loading {args.messages:,} messages over {DAYS} days into {args.schema} ({why})")
        loaded = asyncio.run(load_data(args, settings))
        state = asyncio.run(data_state(settings))
        loaded["log_rows"] = state["log_rows"]
        say(f"loaded in {loaded['total_s']:.0f} s: {state['log_rows']:,} tail_logs rows")
        if state["log_rows"] < MIN_ROWS:
            raise SystemExit(
                f"only {state['log_rows']:,} tail_logs rows: raise --messages above "
                f"{args.messages:,}"
            )
    else:
        say(f"reusing {args.schema}: {state['log_rows']:,} tail_logs rows (--reload to redo)")
        # The API serves the schema the code expects: bring a kept schema up to date. Tables
        # or columns a new migration adds stay empty until a load through the new pipeline.
        before = asyncio.run(applied_migrations(settings))
        try:
            migrate(settings)
        except SystemExit as exc:  # e.g. a migration edited since it was applied here
            raise SystemExit(f"{exc}\n{args.schema} no longer matches schema/: --reload") from None
        added = sorted(set(asyncio.run(applied_migrations(settings))) - set(before))
        if added:
            say(f"warning: migrations {added} applied to data loaded without them; --reload")
    # What the daily `tailpipe retention` does: the days that ended get their search index;
    # today's rows are searched without one, as in production.
    indexed = asyncio.run(build_search_index(settings))
    if indexed:
        say(f"search index built on {len(indexed)} ended days")
    age = started - state["last_ts"]
    say(f"data from {state['first_ts']:%Y-%m-%d %H:%M} to {state['last_ts']:%Y-%m-%d %H:%M} UTC")
    if age > STALE_AFTER:
        say(f"warning: newest row is {age} old; the 24 h window is thin (--reload refreshes it)")

    out = out_dir(args)
    say(
        f"measuring {len(ENDPOINTS)} requests x {len(TARGETS_MS)} windows, "
        f"{WARMUP} warm-up + {args.requests} timed each"
    )
    with api_server(settings, out / "api-serve.log") as base:
        results = measure(base, args.requests)
    say("explaining the recent-logs queries")
    blocks, plans = asyncio.run(explain_recent(settings))

    stamp = started.strftime("%Y-%m-%dT%H%M%S")
    plans_path = out / f"api-plans-{stamp}.txt"
    plans_path.write_text("\n\n".join(blocks) + "\n")
    outcome = {
        "started": started.isoformat(timespec="seconds"),
        "schema": args.schema,
        "log_rows": state["log_rows"],
        "data_from": state["first_ts"],
        "data_to": state["last_ts"],
        "load": loaded,  # null: the schema was reused
        "warmup": WARMUP,
        "requests": args.requests,
        "results": results,
        "all_ok": all(r["ok"] for r in results),
        "plans": plans,
        "plans_file": shown(plans_path),
    }
    path = out / f"api-{stamp}.json"
    path.write_text(json.dumps(outcome, indent=2, default=str) + "\n")

    print(f"tailpipe API benchmark: {state['log_rows']:,} tail_logs rows in {args.schema}")
    if loaded:
        print(
            f"load: {loaded['total_s']:.0f} s (publish {loaded['publish_s']:.0f} s, store "
            f"{loaded['store_s']:.0f} s, VACUUM ANALYZE {loaded['vacuum_analyze_s']:.0f} s)"
        )
    print()
    print(table(results))
    print()
    print(plan_lines(plans))
    missed = [f"{r['endpoint']} at {r['hours']} h" for r in results if not r["ok"]]
    print()
    print("all targets met" if not missed else "MISSED: " + "; ".join(missed))
    print(f"JSON: {shown(path)}  plans: {shown(plans_path)}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--messages", type=int, default=1_700_000, help="messages to load (~3 log rows each)"
    )
    parser.add_argument("--requests", type=int, default=50, help="timed requests per case")
    parser.add_argument("--reload", action="store_true", help="load even if the data is there")
    parser.add_argument("--schema", default=SCHEMA, help="kept schema holding the data")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800, help="store phase, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.messages < 1:
        parser.error("--requests and --messages must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
