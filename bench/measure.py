"""What the ingest benchmark reads from /proc, and the settling before each measured run.

Every consumer runs as child processes, so all are measured alike: CPU is utime + stime of
/proc/<pid>/stat read while the process still lives (at the moment its work is done), peak RSS
is VmHWM of /proc/<pid>/status. PostgreSQL's CPU is the sum over every process of the postgres
user (or named `postgres`), read before and after a run; the reaped children's time that a
process accumulates (cutime + cstime: the postmaster's exited backends) is included, so a
backend that ends during the run is still counted.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg

MIB = 1 << 20
_TICK = os.sysconf("SC_CLK_TCK")
_BACKGROUND = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "autovacuum worker",
    "logical replication launcher",
    "archiver",
    "startup",
)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (its own, not its reaped children's)."""
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def rss_peak_mib(pid: int) -> float | None:
    """VmHWM: the process's peak resident set so far."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _postgres_uid() -> int | None:
    try:
        return pwd.getpwnam("postgres").pw_uid
    except KeyError:
        return None


_PG_UID = _postgres_uid()


def _is_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            if comm.read().startswith("postgres"):
                return True
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return _PG_UID is not None and int(line.split()[1]) == _PG_UID
    except OSError:
        return False
    return False


def _kind(pid: int) -> str:
    """`postmaster`, a background process's name, or `backend` (a client connection)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            title = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "gone"
    if not title.startswith("postgres: "):
        return "postmaster"
    rest = title.removeprefix("postgres: ")
    return next((name for name in _BACKGROUND if rest.startswith(name)), "backend")


@dataclass(frozen=True, slots=True)
class PostgresCpu:
    """CPU seconds of the PostgreSQL processes at one moment, by kind of process."""

    by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())

    def since(self, before: PostgresCpu) -> dict[str, float]:
        """Seconds spent between `before` and this reading: in total and by kind (a kind can go
        negative when a process moved between kinds, e.g. an exited backend into `reaped`)."""
        kinds = sorted(set(self.by_kind) | set(before.by_kind))
        spent = {k: self.by_kind.get(k, 0.0) - before.by_kind.get(k, 0.0) for k in kinds}
        return {"total": self.total - before.total, **spent}


def postgres_cpu() -> PostgresCpu:
    """The PostgreSQL processes' CPU now: their own time, and their reaped children's."""
    seconds: defaultdict[str, float] = defaultdict(float)
    for name in os.listdir("/proc"):
        if not name.isdigit() or not _is_postgres(int(name)):
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        seconds[_kind(int(name))] += (int(fields[11]) + int(fields[12])) / _TICK
        seconds["reaped"] += (int(fields[13]) + int(fields[14])) / _TICK
    return PostgresCpu(dict(seconds))


async def settle(conn: asyncpg.Connection, pause_s: float) -> None:
    """Before a measured run: dirty pages to disk (sync), a PostgreSQL CHECKPOINT, a pause, so
    that no run pays for the writes of the one before it."""
    await asyncio.to_thread(os.sync)
    await conn.execute("CHECKPOINT")
    await asyncio.sleep(pause_s)
