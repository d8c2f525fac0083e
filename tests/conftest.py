"""Shared fixtures. Integration tests talk to the real local stack (`make stack-up`).

Each test gets its own PostgreSQL schema and Kafka topic names, so tests are independent of
order and of each other. A stack that is down fails the tests; it never skips them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.kafka import clients
from pipeline.postgres.connect import connect, quote_ident
from pipeline.settings import Settings, load

if TYPE_CHECKING:
    from tests.support.replica import Replica

ROOT = Path(__file__).resolve().parent.parent


# A test that asks for one of these talks to the local stack, so it is marked `stack` without
# saying so; `pytest -m 'not stack'` then runs the pure tests alone. A test that reaches the
# stack some other way (a child `tailpipe`, the broker helper) carries the mark itself.
STACK_FIXTURES = frozenset(("schema", "settings", "db", "migrated", "replicas"))


def stale_builds(root: Path = ROOT) -> list[str]:
    """Compiled modules (pyproject.toml's mypyc hook) older than their source: Python imports
    the extension before the `.py`, so the tests would run the old code."""
    found = []
    for built in sorted((root / "pipeline").rglob("*.so")):
        source = built.with_name(built.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > built.stat().st_mtime:
            found.append(str(source.relative_to(root)))
    # The native core, built by cargo from its crate (pipeline/native).
    crate = root / "pipeline" / "native"
    for built in sorted(crate.glob("_core*.so")):
        sources = [crate / "Cargo.toml", crate / "Cargo.lock", *sorted(crate.glob("src/*.rs"))]
        found += [
            str(source.relative_to(root))
            for source in sources
            if source.exists() and source.stat().st_mtime > built.stat().st_mtime
        ]
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_builds()
    if stale:
        pytest.exit(
            f"{', '.join(stale)} changed since it was compiled: run `make venv` to build it again",
            returncode=2,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tool(name: str) -> str:
    """The path of a command a test needs besides the stack; missing is a failure, not a skip."""
    path = shutil.which(name)
    assert path, f"{name} missing: `.venv/bin/python deploy/local/stack.py tools` installs it"
    return path


def tailpipe(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the real command line (`python -m pipeline`) in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """The stack the developer points at (`TAILPIPE_*`), the local one by default."""
    return load()


@pytest.fixture
def schema(base_settings: Settings) -> Iterator[str]:
    """A fresh schema name; dropped with everything in it after the test."""
    name = unique("t")
    yield name
    asyncio.run(drop_schema(base_settings, name))


async def drop_schema(settings: Settings, name: str) -> None:
    """Drop the schema `name` and everything in it, if it is there."""
    conn = await connect(settings)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
    finally:
        await conn.close()


def isolated(base: Settings, schema: str, prefix: str = "") -> Settings:
    """`base` with a schema, topics, group and dead-letter prefix of its own."""
    return replace(
        base,
        postgres_schema=schema,
        topic=unique(f"{prefix}events"),
        alerts_topic=unique(f"{prefix}alerts"),
        group=unique(f"{prefix}group"),
        dlq_url=f"s3://{base.dlq_bucket}/{schema}",
    )


@pytest.fixture
def settings(base_settings: Settings, schema: str) -> Settings:
    """Settings of one test: its own schema and topics on the shared local stack."""
    return isolated(base_settings, schema)


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that makes a child `tailpipe` use these settings."""
    return {
        "TAILPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TAILPIPE_TOPIC": settings.topic,
        "TAILPIPE_ALERTS_TOPIC": settings.alerts_topic,
        "TAILPIPE_GROUP": settings.group,
        "TAILPIPE_POSTGRES_DSN": settings.postgres_dsn,
        "TAILPIPE_POSTGRES_SCHEMA": settings.postgres_schema,
        "TAILPIPE_S3_ENDPOINT": settings.s3_endpoint,
        "TAILPIPE_DLQ_URL": settings.dlq_url,
    }


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(settings)
    try:
        yield conn
    finally:
        await conn.close()


async def read_topic(settings: Settings, n: int) -> list[tuple[bytes | None, bytes]]:
    """The (key, value) of every message on the test's topic: exactly n, none after them."""
    consumer = AIOKafkaConsumer(
        **clients.client_options(settings), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes]] = []
    try:
        consumer.subscribe([settings.topic])
        async with asyncio.timeout(60):
            while len(out) < n:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    out.extend((r.key, r.value) for r in records)
        assert not await consumer.getmany(timeout_ms=1000), "more messages than expected"
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Replicas a test starts; killed if still running at the end, their log tails printed."""
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
