"""`make run`'s last step: two replicas consume what loadgen publishes; print what was stored.

Runs against the effective settings (the local stack by default): starts two `tailpipe run`
processes in one consumer group, publishes synthetic load, waits until PostgreSQL's stored
offsets reach the end of every partition, stops the replicas with SIGTERM and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from pipeline import kafka, postgres
from pipeline.settings import Settings, load

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("tail_events", "tail_logs", "dead_letters", "tail_metrics_hourly", "api_usage_daily",
          "error_summary", "scan_activity_hourly")  # fmt: skip


async def stored(settings: Settings) -> int:
    conn = await postgres.connect(settings)
    try:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(next_offset), 0) FROM pipeline_offsets WHERE topic = $1",
                settings.topic,
            )
        )
    finally:
        await conn.close()


async def row_counts(settings: Settings) -> dict[str, int]:
    conn = await postgres.connect(settings)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
    finally:
        await conn.close()


async def main(count: int, replicas: int, deadline_s: float) -> int:
    settings = load()
    before_stored = await stored(settings)
    before_rows = await row_counts(settings)
    # Replica i serves its metrics on metrics_port + i, so each can be scraped.
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "run", cwd=ROOT,
            env={**os.environ, "TAILPIPE_METRICS_PORT": str(settings.metrics_port + i)},
        )
        for i in range(replicas)
    ]  # fmt: skip
    started = time.monotonic()
    try:
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "loadgen", "--count", str(count),
            "--poison-ratio", "0.01", cwd=ROOT,
        )  # fmt: skip
        if await loadgen.wait() != 0:
            return 1
        target = sum((await kafka.end_offsets(settings, settings.topic)).values())
        async with asyncio.timeout(deadline_s):
            while (now := await stored(settings)) < target:
                if any(p.returncode is not None for p in procs):
                    print("a replica exited early", file=sys.stderr)
                    return 1
                await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    after_rows = await row_counts(settings)
    done = now - before_stored
    print(f"\n{replicas} replicas stored {done} messages in {elapsed:.1f} s")
    print(f"{done / elapsed:,.0f} messages/s, load generation included")
    print(f"{'table':<22} {'rows added':>12} {'rows now':>12}")
    for table in TABLES:
        added = after_rows[table] - before_rows[table]
        print(f"{table:<22} {added:>12,} {after_rows[table]:>12,}")
    print(f"replica exit codes: {codes}")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds to wait")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.count, args.replicas, args.deadline)))
