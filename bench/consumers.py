"""The consumers the ingest benchmark compares, as `Run`s; the Quix virtualenv; py-spy.

Each run has its own consumer group and (but the bare read) its own fresh schema, and reads
the whole pre-filled topic:

- `tailpipe` (`tailpipe-x2`, ...): `tailpipe run`, default settings but for schema, topic,
  group and the metrics port (0: any free one, so that replicas and other benchmarks on the
  machine do not collide); done when `pipeline_offsets` covers every message;
- `dump`: `bench/dump.py` into a migrated tailpipe schema, whose search index is built per day
  once the day has ended (`pipeline/postgres/search_index.py`): after the run, that build is
  measured too (PostgreSQL's CPU and the wall time), as the nightly job would run it;
- `dump-live-trgm`: the same with the trigram index kept on the whole of `tail_logs.message`,
  row by row, as the schema had it before the per-day index;
- `quix`: `bench/quix_app.py`, Quix Streams and its PostgreSQL sink, in `.local/bench/quix-venv`;
- `kafka`: `bench/kafka_read.py`, the Kafka read alone.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from bench.measure import postgres_cpu
from bench.prepare import child_env
from bench.runner import Check, Run
from pipeline.postgres import search_index
from pipeline.postgres.connect import quote_ident
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("tailpipe", "tailpipe-nodedup", "dump", "dump-live-trgm", "quix", "kafka")
"""What `--only` selects from; `tailpipe` stands for every replica count of `--replicas`;
`tailpipe-nodedup` is one replica with `TAILPIPE_DEDUP=off`, what deduplication costs."""
QUIX_VERSION = "3.28.1"
QUIX_VENV = ROOT / ".local" / "bench" / "quix-venv"
QUIX_TABLE = "quix_events"
QUIX_STATE = ROOT / ".local" / "bench" / "quix-state"
"""Where Quix keeps its (here unused) state: a directory per run, removed afterwards."""
LIVE_TRGM = (
    "CREATE INDEX tail_logs_message_trgm ON tail_logs USING gin (message public.gin_trgm_ops)"
)


def tailpipe_name(replicas: int) -> str:
    return "tailpipe" if replicas == 1 else f"tailpipe-x{replicas}"


def _raw_rows(n: int) -> Check:
    async def check(db: asyncpg.Connection) -> dict[str, Any]:
        events = int(await db.fetchval("SELECT count(*) FROM tail_events"))
        logs = int(await db.fetchval("SELECT count(*) FROM tail_logs"))
        return {"tail_events": events, "tail_logs": logs, "complete": events == n}

    return check


def _raw_rows_then_search_index(n: int) -> Check:
    """The rows, then the search index of every (ended) day they fill, built and measured."""
    rows = _raw_rows(n)

    async def check(db: asyncpg.Connection) -> dict[str, Any]:
        found = await rows(db)
        before, started = postgres_cpu(), time.perf_counter()
        indexed = await search_index.index_closed_days(db, datetime.now(UTC))
        cpu = postgres_cpu().since(before)["total"]
        found["search_index"] = {
            "partitions": len(indexed),
            "seconds": time.perf_counter() - started,
            "postgres_cpu_s": cpu,
            "postgres_cpu_us_per_event": cpu * 1e6 / n,
        }
        return found

    return check


def _quix_rows(schema: str, n: int) -> Check:
    async def check(db: asyncpg.Connection) -> dict[str, Any]:
        table = f"{quote_ident(schema)}.{quote_ident(QUIX_TABLE)}"
        rows = int(await db.fetchval(f"SELECT count(*) FROM {table}"))
        return {QUIX_TABLE: rows, "complete": rows >= n}

    return check


def runs(
    base: Settings,
    run_id: str,
    n: int,
    names: list[str],
    replicas: list[int],
    quix: Path | None,
    schema_sql: tuple[str, ...] = (),
) -> list[Run]:
    """The selected runs, in the order they are measured. `quix`: its python, if installed;
    `schema_sql`: run in every fresh tailpipe schema after migrating (an index variant, say)."""

    def settings(suffix: str) -> Settings:
        name = f"bench_{run_id}_{suffix.replace('-', '_')}"
        return replace(base, postgres_schema=name, group=name)

    out: list[Run] = []
    if "tailpipe" in names:
        for count in replicas:
            tp = settings(tailpipe_name(count))
            out.append(Run(
                tailpipe_name(count), f"tailpipe run x{count}", tp,
                [[sys.executable, "-m", "pipeline", "run"]] * count,
                child_env(tp, TAILPIPE_METRICS_PORT="0"), "offsets", _raw_rows(n),
                migrate=schema_sql, extra={"replicas": count},
            ))  # fmt: skip
    if "tailpipe-nodedup" in names:
        off = settings("tailpipe-nodedup")
        out.append(Run(
            "tailpipe-nodedup", "tailpipe run x1, TAILPIPE_DEDUP=off", off,
            [[sys.executable, "-m", "pipeline", "run"]],
            child_env(off, TAILPIPE_METRICS_PORT="0", TAILPIPE_DEDUP="off"), "offsets",
            _raw_rows(n), migrate=schema_sql, extra={"replicas": 1},
        ))  # fmt: skip
    for name, label, sql, check in (
        ("dump", "plain dump", schema_sql, _raw_rows_then_search_index(n)),
        ("dump-live-trgm", "plain dump, live trigram", (*schema_sql, LIVE_TRGM), _raw_rows(n)),
    ):
        if name in names:
            dump = settings(name)
            command = [sys.executable, str(ROOT / "bench" / "dump.py"), "--messages", str(n)]
            out.append(Run(
                name, label, dump, [command], child_env(dump), "progress", check, migrate=sql,
            ))  # fmt: skip
    if "quix" in names and quix is not None:
        out.append(_quix(settings("quix"), n, quix))
    if "kafka" in names:
        read = settings("kafka")
        command = [sys.executable, str(ROOT / "bench" / "kafka_read.py"), "--messages", str(n)]
        out.append(Run("kafka", "Kafka read alone", read, [command], child_env(read), "progress"))
    # In the order `--only` gave, so that a pair can be measured both ways round (the first
    # run after the fill has found the page cache in another state); the replica counts of
    # `tailpipe` keep theirs.
    order = {name: i for i, name in enumerate(names)}
    return sorted(out, key=lambda run: order.get(run.name, order.get("tailpipe", 0)))


def _quix(settings: Settings, n: int, python: Path) -> Run:
    dsn = urlsplit(settings.postgres_dsn)
    command = [
        str(python), str(ROOT / "bench" / "quix_app.py"),
        "--bootstrap", settings.kafka_bootstrap, "--topic", settings.topic,
        "--group", settings.group, "--host", dsn.hostname or "127.0.0.1",
        "--port", str(dsn.port or 5432), "--dbname", dsn.path.lstrip("/") or "postgres",
        "--user", unquote(dsn.username or "postgres"), "--schema", settings.postgres_schema,
        "--table", QUIX_TABLE, "--state-dir", str(QUIX_STATE / settings.group),
    ]  # fmt: skip
    env = child_env(settings, PGPASSWORD=unquote(dsn.password or ""))
    return Run(
        "quix", f"Quix Streams {QUIX_VERSION}", settings, [command], env, "progress",
        _quix_rows(settings.postgres_schema, n), extra={"quix_version": QUIX_VERSION},
    )  # fmt: skip


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)


def _failed(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"`{' '.join(map(str, done.args))}` exited {done.returncode}: " + "\n".join(lines[-30:])


def install_quix() -> tuple[Path | None, str | None]:
    """Quix Streams `QUIX_VERSION` in its own virtualenv: (its python, None), or (None, why not).
    Installed once; a virtualenv holding another version is upgraded."""
    python = QUIX_VENV / "bin" / "python"
    version = [str(python), "-c", "import importlib.metadata as m; print(m.version('quixstreams'))"]
    if python.exists() and _run(version).stdout.strip() == QUIX_VERSION:
        return python, None
    steps = [
        [sys.executable, "-m", "venv", str(QUIX_VENV)],
        [str(python), "-m", "pip", "install", "-q", f"quixstreams[postgresql]=={QUIX_VERSION}"],
    ]
    for step in steps:
        done = _run(step)
        if done.returncode != 0:
            return None, _failed(done)
    return python, None


def py_spy(out: Path) -> tuple[Callable[[int], Awaitable[Any]] | None, str | None]:
    """A starter of `py-spy record` for a pid (.svg: a flame graph, else raw collapsed stacks),
    installing py-spy into the virtualenv when it is missing; or (None, why not)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        done = _run([sys.executable, "-m", "pip", "install", "-q", "py-spy"])
        if done.returncode != 0 or not spy.exists():
            return None, _failed(done)
    kind = "flamegraph" if out.suffix == ".svg" else "raw"
    out.parent.mkdir(parents=True, exist_ok=True)

    async def start(pid: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            # --native: the compiled hot path's frames are C functions.
            str(spy), "record", "--native", "-r", "200", "-f", kind, "-o", str(out),
            "--pid", str(pid),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    return start, None
