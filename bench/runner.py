"""One measured run of a consumer: settle, start its processes, wait until every message is
stored, read CPU, peak RSS and PostgreSQL's CPU at that moment, check the tables, stop it.

A run knows it is done in one of two ways: `tailpipe run` by its stored offsets
(`pipeline_offsets`, polled in PostgreSQL), the bench's own children by their progress lines
(`bench/child.py`), each written after a commit. Either way the rows are then counted in
PostgreSQL before the processes are stopped (SIGTERM, as an orchestrator would).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import asyncpg

from bench.child import parse_line
from bench.measure import cpu_seconds, postgres_cpu, rss_peak_mib, settle
from pipeline.postgres.connect import connect
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.1
Check = Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]]


class RunFailed(Exception):
    """A run that could not finish: a process exited, or the timeout passed."""


@dataclass(frozen=True, slots=True)
class Run:
    """How to start one consumer (one command per process) and how to tell it is done."""

    name: str
    label: str
    settings: Settings
    commands: list[list[str]]
    env: dict[str, str]
    done_by: Literal["offsets", "progress"]
    check: Check | None = None
    """Counts what the run stored, in PostgreSQL, before it is stopped."""
    migrate: tuple[str, ...] | None = None
    """SQL run in its schema after `tailpipe migrate`; None: the schema is not migrated."""
    extra: dict[str, Any] = field(default_factory=dict)


_WAITS = """
SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*) FILTER (WHERE state = 'active')
FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"""


@dataclass
class LockWaits:
    """Sampled at every poll: backends waiting on a lock (replicas upserting the same rollup
    rows wait for each other) against backends running a statement."""

    waiting: int = 0
    active: int = 0
    samples: int = 0

    async def sample(self, db: asyncpg.Connection) -> None:
        row = await db.fetchrow(_WAITS)
        assert row is not None
        waiting, active = row
        self.waiting += waiting
        self.active += active
        self.samples += 1

    def report(self) -> dict[str, Any]:
        share = self.waiting / self.active if self.active else 0.0
        return {"samples": self.samples, "waiting": self.waiting, "active": self.active,
                "share_of_active": share}  # fmt: skip


async def stored_offsets(db: asyncpg.Connection, topic: str) -> int:
    """Messages `tailpipe run` has stored: the sum of its next offsets (all start at 0)."""
    total = await db.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM pipeline_offsets WHERE topic = $1", topic
    )
    return int(total)


def _log_file(path: Path) -> BinaryIO:
    return open(path, "wb")


async def _spawn(
    command: list[str], env: dict[str, str], log: Path, piped: bool
) -> asyncio.subprocess.Process:
    with _log_file(log) as out:
        return await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if piped else out,
            stderr=out,
        )


async def _read_progress(
    proc: asyncio.subprocess.Process, counts: list[int], i: int, changed: asyncio.Event
) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        found = parse_line(line)
        if found is not None:
            counts[i] = found["done"]
            changed.set()


async def _stop(procs: list[asyncio.subprocess.Process]) -> list[int | None]:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return [proc.returncode for proc in procs]


def _sum(values: list[float | None]) -> float | None:
    """The sum, or None when a value is missing (or there are none)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


async def measure(
    run: Run,
    n: int,
    *,
    settle_s: float,
    timeout_s: float,
    logs: Path,
    spy: Callable[[int], Awaitable[asyncio.subprocess.Process]] | None = None,
) -> dict[str, Any]:
    """Run `run` until n messages are stored (or read); what it cost."""
    db = await connect(run.settings)
    log_paths = [logs / f"{run.name}-{i}.log" for i in range(len(run.commands))]
    piped = run.done_by == "progress"
    procs: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []
    spying: asyncio.subprocess.Process | None = None
    try:
        await settle(db, settle_s)
        pg_before = postgres_cpu()
        started = time.perf_counter()
        for command, log in zip(run.commands, log_paths, strict=True):
            procs.append(await _spawn(command, run.env, log, piped))
        spying = await spy(procs[0].pid) if spy is not None else None
        counts = [0] * len(procs)
        changed = asyncio.Event()
        if piped:
            readers = [
                asyncio.create_task(_read_progress(p, counts, i, changed))
                for i, p in enumerate(procs)
            ]
        first_at: float | None = None
        first_total = 0
        first_cpu: list[float | None] = []
        waits = LockWaits()
        while True:
            await waits.sample(db)
            total = await stored_offsets(db, run.settings.topic) if not piped else sum(counts)
            now = time.perf_counter()
            if total and first_at is None:
                first_at, first_total = now, total
                first_cpu = [cpu_seconds(p.pid) for p in procs]
            if total >= n:
                break
            for proc, log in zip(procs, log_paths, strict=True):
                if proc.returncode is not None:
                    raise RunFailed(
                        f"{run.name} exited {proc.returncode} at {total:,}/{n:,}; see {log}"
                    )
            if now - started > timeout_s:
                raise RunFailed(f"{run.name} timed out at {total:,}/{n:,}; see {log_paths[0]}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), POLL_S)
        cpu = [cpu_seconds(p.pid) for p in procs]
        peaks = [rss_peak_mib(p.pid) for p in procs]
        pg = postgres_cpu().since(pg_before)
        stored = await run.check(db) if run.check is not None else {}
    finally:
        if spying is not None and spying.returncode is None:
            spying.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spying.wait(), 60)
        exits = await _stop(procs)
        for task in readers:
            task.cancel()
        await db.close()
    seconds = now - started
    consumer_cpu = _sum(cpu)
    first_sum = _sum(first_cpu)
    steady_cpu = (
        (consumer_cpu - first_sum) * 1e6 / (total - first_total)
        if consumer_cpu is not None and first_sum is not None and total > first_total
        else None
    )
    steady = (
        (total - first_total) / (now - first_at)
        if first_at is not None and now > first_at
        else None
    )
    return {
        "name": run.name,
        "label": run.label,
        "processes": len(procs),
        "messages": total,
        "seconds": seconds,
        "events_per_s": total / seconds,
        "first_stored_after_s": None if first_at is None else first_at - started,
        "steady_events_per_s": steady,
        "consumer_cpu_s": consumer_cpu,
        "consumer_cpu_s_each": cpu,
        "consumer_cpu_us_per_event": None if consumer_cpu is None else consumer_cpu * 1e6 / total,
        "steady_consumer_cpu_us_per_event": steady_cpu,
        "postgres_cpu_s": pg,
        "postgres_cpu_us_per_event": pg["total"] * 1e6 / total,
        "peak_rss_mib": max((p for p in peaks if p is not None), default=None),
        "peak_rss_mib_each": peaks,
        "stored": stored,
        "lock_waits": waits.report(),
        "exit_codes": exits,
        "logs": [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in log_paths],
        **run.extra,
    }
