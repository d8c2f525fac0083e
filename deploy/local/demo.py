"""`make run`'s last step: replicas consume what loadgen publishes; print what was stored.

Runs against the effective settings (the local stack by default): starts `--replicas` `tailpipe
run` processes in one consumer group, publishes synthetic load, waits until PostgreSQL's stored
offsets reach the end of every partition, stops the replicas with SIGTERM and prints a summary.

The terminal gets a progress line (rewritten in place on a terminal) and the summary, not the
processes' logs: replica i logs to `<logs>/replica-<i>.log` and loadgen to `<logs>/loadgen.log`
(`.local/logs/` by default, emptied at each run). When a replica exits early or the deadline
passes, the end of the logs that say why is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO, TextIO

from pipeline.kafka import clients
from pipeline.postgres.connect import connect
from pipeline.settings import Settings, load

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".local" / "logs"
TABLES = ("tail_events", "tail_logs", "dead_letters", "tail_metrics_hourly", "api_calls_daily",
          "rate_limit_readings_daily", "error_summary", "scan_activity_hourly")  # fmt: skip
TAIL_LINES = 20


async def stored(settings: Settings) -> int:
    conn = await connect(settings)
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
    conn = await connect(settings)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
    finally:
        await conn.close()


async def end_offsets(settings: Settings) -> int:
    return sum((await clients.end_offsets(settings, settings.topic)).values())


def shown(path: Path) -> str:
    """The path as the user would type it from here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


class Progress:
    """`stored N of M messages`: one line rewritten in place on a terminal; otherwise a line
    per quarter of the way, and one every 10 s while nothing else is said."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_at = time.monotonic()
        self._quarter = 0
        self._width = 0
        self._said = (-1, -1)

    def show(self, done: int, goal: int, elapsed: float, final: bool = False) -> None:
        share = done / goal if goal else 1.0
        line = f"stored {done:,} of {goal:,} messages ({share:.0%}) in {elapsed:.1f} s"
        now = time.monotonic()
        if self.tty:
            if final or now - self._last_at >= 0.25:
                self.out.write("\r" + line.ljust(self._width))
                self._width = len(line)
                self.out.flush()
                self._last_at = now
            return
        quarter = min(4, int(share * 4))
        new = (done, goal) != self._said
        if (final and new) or quarter > self._quarter or now - self._last_at >= 10:
            print(line, file=self.out, flush=True)
            self._quarter, self._last_at, self._said = quarter, now, (done, goal)

    def end(self) -> None:
        """Leave the in-place line, so what follows starts on its own."""
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
            self._width = 0


async def main(count: int, replicas: int, deadline_s: float, logs: Path) -> int:
    settings = load()
    replica_logs = [logs / f"replica-{i}.log" for i in range(replicas)]
    loadgen_log = logs / "loadgen.log"
    # Opened (and emptied) here, written by the children; the parent only reads them.
    with contextlib.ExitStack() as files:
        outputs = [files.enter_context(p.open("wb")) for p in [*replica_logs, loadgen_log]]
        return await run(settings, count, deadline_s, replica_logs, loadgen_log, outputs)


async def run(
    settings: Settings,
    count: int,
    deadline_s: float,
    replica_logs: list[Path],
    loadgen_log: Path,
    outputs: list[BinaryIO],
) -> int:
    replicas = len(replica_logs)
    before_stored = await stored(settings)
    before_rows = await row_counts(settings)
    # loadgen publishes exactly `count`; once it is done the broker's end offsets are the goal.
    goal = await end_offsets(settings) + count
    print(f"{replicas} replicas (group {settings.group}) consume {count:,} messages from loadgen")
    print(f"logs: {' '.join(shown(p) for p in [*replica_logs, loadgen_log])}")
    progress = Progress(sys.stdout)

    def failed(why: str, paths: list[Path]) -> int:
        progress.end()
        print(why, file=sys.stderr)
        for path in paths:
            lines = tail(path)
            print(f"the end of {shown(path)}:" if lines else f"{shown(path)} is empty",
                  *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)  # fmt: skip
        return 1

    procs: list[asyncio.subprocess.Process] = []
    loadgen: asyncio.subprocess.Process | None = None
    started = time.monotonic()
    now, elapsed = before_stored, 0.0
    try:
        for i, log in enumerate(outputs[:replicas]):
            # Replica i serves its metrics on metrics_port + i, so each can be scraped (0: each
            # picks a free port).
            port = settings.metrics_port + i if settings.metrics_port else 0
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipeline", "run", cwd=ROOT,
                env={**os.environ, "TAILPIPE_METRICS_PORT": str(port)},
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            ))  # fmt: skip
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "loadgen", "--count", str(count),
            "--poison-ratio", "0.01", cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL, stdout=outputs[-1], stderr=outputs[-1],
        )  # fmt: skip
        published = False
        try:
            async with asyncio.timeout(deadline_s):
                while True:
                    for i, p in enumerate(procs):
                        if p.returncode is not None:
                            why = f"replica {i} exited early with code {p.returncode}"
                            return failed(why, [replica_logs[i]])
                    if not published and loadgen.returncode is not None:
                        if loadgen.returncode != 0:
                            why = f"loadgen exited with code {loadgen.returncode}"
                            return failed(why, [loadgen_log])
                        published, goal = True, await end_offsets(settings)
                    now = await stored(settings)
                    elapsed = time.monotonic() - started
                    done = published and now >= goal
                    progress.show(now - before_stored, goal - before_stored, elapsed, done)
                    if done:
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            why = (f"the deadline ({deadline_s:.0f} s) passed with {now - before_stored:,} of"
                   f" {goal - before_stored:,} messages stored")  # fmt: skip
            return failed(why, replica_logs if published else [*replica_logs, loadgen_log])
        progress.end()
    finally:
        for p in [*procs, *([loadgen] if loadgen else [])]:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    after_rows = await row_counts(settings)
    done_count = now - before_stored
    print(f"\n{replicas} replicas stored {done_count:,} messages in {elapsed:.1f} s:"
          f" {done_count / elapsed:,.0f} messages/s, load generation included")  # fmt: skip
    for line in tail(loadgen_log, 1):  # its own count and rate
        print(f"loadgen: {line}")
    width = max(len(table) for table in TABLES)
    print(f"{'table':<{width}} {'rows added':>12} {'rows now':>12}")
    for table in TABLES:
        added = after_rows[table] - before_rows[table]
        print(f"{table:<{width}} {added:>12,} {after_rows[table]:>12,}")
    print(f"replica exit codes: {codes}")
    if any(codes):
        bad = [path for path, code in zip(replica_logs, codes, strict=True) if code]
        return failed("a replica did not stop cleanly", bad)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds to wait")
    parser.add_argument("--logs", type=Path, default=LOGS, help="directory of the logs")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main(args.count, args.replicas, args.deadline, args.logs)))
