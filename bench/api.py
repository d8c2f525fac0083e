"""Query API benchmark: each endpoint's latency over 5,000,000+ log rows spanning 30 days.

    .venv/bin/python bench/api.py [--messages 1700000] [--requests 50] [--reload]

Data goes in through the real pipeline, so the rollups are what production would have:
synthetic trace items (about 3 log lines each) with event times spread over the last 30 days
are published to a 6-partition topic and stored by one `tailpipe run`, into the schema
`bench_api`, which is kept: a later run reuses it unless `--reload`.

Then a `tailpipe api` process serves that schema, and one client (sequential, keep-alive)
asks each endpoint at hours=24 and hours=720: 5 warm-up requests, then `--requests` timed
ones. Targets: p95 <= 100 ms at 24 h, <= 300 ms at 720 h. Prints a table; writes JSON and the
`EXPLAIN (ANALYZE, BUFFERS)` of the recent-logs queries under `.local/bench/`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.ingest import env_of, migrate  # noqa: E402
from pipeline import kafka, postgres, synth  # noqa: E402
from pipeline.publisher import BulkPublisher  # noqa: E402
from pipeline.settings import Settings, load  # noqa: E402

SCHEMA = "bench_api"
TOKEN = "bench-api-token-0123456789"
DAYS = 30
TARGETS_MS = {24: 100.0, 720: 300.0}
ENDPOINTS: list[tuple[str, dict[str, str]]] = [
    ("/api/logs/recent", {}),
    ("/api/logs/recent", {"level": "error"}),
    ("/api/logs/recent", {"q": "retrying"}),
    ("/api/logs/recent", {"script": "billing-worker", "level": "warn"}),
    ("/api/logs/errors", {}),
    ("/api/logs/performance", {}),
    ("/api/logs/performance", {"script": "api-gateway"}),
    ("/api/logs/api-usage", {}),
    ("/api/logs/scan-activity", {}),
    ("/api/logs/critical-alerts", {}),
]


def settings_for_bench() -> Settings:
    base = load()
    return replace(
        base,
        postgres_schema=SCHEMA,
        dlq_url=f"s3://{base.dlq_bucket}/{SCHEMA}",
        api_read_tokens=(TOKEN,),
    )


async def log_rows(settings: Settings) -> int:
    conn = await postgres.connect(settings)
    try:
        exists = await conn.fetchval("SELECT to_regclass('tail_logs') IS NOT NULL")
        return int(await conn.fetchval("SELECT count(*) FROM tail_logs")) if exists else 0
    finally:
        await conn.close()


async def load_data(settings: Settings, messages: int) -> dict[str, float]:
    """Publish `messages` spread over the last 30 days; store them with one replica."""
    conn = await postgres.connect(load())
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.execute(f"CREATE SCHEMA {SCHEMA}")
    await conn.close()
    migrate(settings)
    # A fresh topic and group per load: the old ones hold the previous load's offsets.
    suffix = int(time.time())
    settings = replace(settings, topic=f"{SCHEMA}_{suffix}", group=f"{SCHEMA}_{suffix}")
    await kafka.ensure_topics(settings, {settings.topic: 6})
    now_ms = int(time.time() * 1000)
    span_ms = DAYS * 86_400_000
    step = span_ms // messages
    started = time.perf_counter()
    stream = synth.messages(7, now_ms - span_ms, poison_ratio=0.001, step_ms=step)
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n, message in enumerate(itertools.islice(stream, messages), 1):
            await publisher.add(message.key, message.value)
            if n % 200_000 == 0:
                print(f"  published {n:,}", flush=True)
    published_s = time.perf_counter() - started
    started = time.perf_counter()
    replica = subprocess.Popen(  # noqa: ASYNC220 (started once, then only polled)
        [sys.executable, "-m", "pipeline", "run"],
        env={**os.environ, **env_of(settings), "TAILPIPE_METRICS_PORT": "0"},
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    conn = await postgres.connect(settings)
    try:
        last = 0
        while True:
            stored = int(await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM pipeline_offsets WHERE topic = $1",
                settings.topic,
            ))  # fmt: skip
            if stored >= messages:
                break
            if replica.poll() is not None:
                raise SystemExit(f"tailpipe run exited {replica.returncode}")
            if stored - last >= 200_000:
                print(f"  stored {stored:,}", flush=True)
                last = stored
            await asyncio.sleep(1)
        stored_s = time.perf_counter() - started
        replica.send_signal(signal.SIGTERM)
        replica.wait(120)
        for table in ("tail_logs", "tail_events", "tail_metrics_hourly", "error_hourly"):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return {"publish_s": round(published_s, 1), "store_s": round(stored_s, 1)}


def serve(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "api", "--host", "127.0.0.1"],
        env={
            **os.environ,
            **env_of(settings),
            "TAILPIPE_API_PORT": str(port),
            "TAILPIPE_API_READ_TOKENS": TOKEN,
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("tailpipe api did not become ready")


def measure(port: int, requests: int) -> list[dict[str, Any]]:
    results = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
        for (path, extra), hours in itertools.product(ENDPOINTS, TARGETS_MS):
            params = {"hours": str(hours), **extra}
            times = []
            for i in range(5 + requests):
                started = time.perf_counter()
                response = c.get(path, params=params)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{path} {params}: {response.status_code} {response.text}")
                if i >= 5:
                    times.append(elapsed)
            times.sort()
            p95 = times[max(0, round(0.95 * len(times)) - 1)]
            results.append({
                "endpoint": path + ("?" + "&".join(f"{k}={v}" for k, v in extra.items())
                                    if extra else ""),
                "hours": hours, "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(p95, 1), "target_ms": TARGETS_MS[hours],
                "ok": p95 <= TARGETS_MS[hours], "bytes": len(response.content),
            })  # fmt: skip
    return results


async def plans(settings: Settings) -> list[str]:
    """EXPLAIN ANALYZE of the recent-logs query shapes, for the plans file."""
    conn = await postgres.connect(settings)
    out = []
    try:
        now = datetime.now(UTC)
        for hours in TARGETS_MS:
            since = now - timedelta(hours=hours)
            for label, where, args in (
                ("recent", "", []),
                ("recent level=error", " AND level = $3", ["error"]),
                ("recent q=retrying", " AND message ILIKE $3", ["%retrying%"]),
            ):
                sql = (
                    "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM tail_logs WHERE ts >= $1"
                    f" AND ts <= $2{where} ORDER BY ts DESC, kafka_offset DESC,"
                    " kafka_partition DESC, item DESC, seq DESC, topic DESC LIMIT 101"
                )
                rows = await conn.fetch(sql, since, now, *args)
                out.append(f"-- {label}, hours={hours}\n" + "\n".join(r[0] for r in rows))
    finally:
        await conn.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_700_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--reload", action="store_true", help="load the data again")
    args = parser.parse_args()
    settings = settings_for_bench()
    rows = asyncio.run(log_rows(settings))
    loaded: dict[str, float] = {}
    if args.reload or rows < 5_000_000:
        print(f"loading {args.messages:,} messages over {DAYS} days into {SCHEMA} ...")
        loaded = asyncio.run(load_data(settings, args.messages))
        rows = asyncio.run(log_rows(settings))
    print(f"{rows:,} tail_logs rows in {SCHEMA}")
    port = 18000 + os.getpid() % 1000
    api = serve(settings, port)
    try:
        results = measure(port, args.requests)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)
    explained = asyncio.run(plans(settings))
    print(f"\n{'endpoint':52} {'hours':>5} {'p50 ms':>8} {'p95 ms':>8} {'target':>7}  ok")
    for r in results:
        print(f"{r['endpoint']:52} {r['hours']:>5} {r['p50_ms']:>8} {r['p95_ms']:>8} "
              f"{r['target_ms']:>7.0f}  {'ok' if r['ok'] else 'MISS'}")  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
    out = ROOT / ".local" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"api-plans-{stamp}.txt").write_text("\n\n".join(explained))
    path = out / f"api-{stamp}.json"
    path.write_text(json.dumps({"log_rows": rows, "load": loaded, "results": results}, indent=2))
    print(f"\nJSON: {path.relative_to(ROOT)}; plans: api-plans-{stamp}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
