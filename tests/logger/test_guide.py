"""docs/logger.md's quickstarts, run as a user would run them, against the real stack.

Every code block the guide marks `<!-- quickstart: NAME -->` is written to NAME in a fresh
directory, outside the checkout, and run there: the FastAPI app under uvicorn, answering real
HTTP requests; the worker and the stdlib bridge as scripts. A real `tailpipe run` replica stores
what they publish, and the rows are checked in PostgreSQL. If the guide's code stops working,
this fails.

The FastAPI test also measures what a user sees: the time from a request's answer to its row
in `tail_events` (printed, not asserted: speed is for `make bench`, never for a test).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.conftest import ROOT, free_port
from tests.support.replica import Replica

GUIDE = ROOT / "docs" / "logger.md"
_QUICKSTART = re.compile(r"<!-- quickstart: (\S+) -->\n```python\n(.*?)```", re.DOTALL)
REQUESTS = 60


def quickstarts() -> dict[str, str]:
    return {name: code for name, code in _QUICKSTART.findall(GUIDE.read_text())}


def test_the_guide_has_its_three_quickstarts() -> None:
    assert set(quickstarts()) == {"app.py", "worker.py", "bridge.py"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name, code in quickstarts().items():
        (tmp_path / name).write_text(code)
    return tmp_path


def user_env(settings: Settings, service: str) -> dict[str, str]:
    """What the user sets: the service name and where Kafka is; `pipeline` comes from this
    checkout as an installed package would (PYTHONPATH, the directory being elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILPIPE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TAILPIPE_SERVICE"] = service
    env["TAILPIPE_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["TAILPIPE_TOPIC"] = settings.topic
    return env


async def rows(db: asyncpg.Connection, service: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM tail_events WHERE script = $1", service))


async def test_the_fastapi_quickstart_serves_and_every_request_becomes_a_row(
    workdir: Path, migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await ensure_topics(settings, {settings.topic: 2})
    replicas.append(Replica(settings))
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=workdir,
        env=user_env(settings, "quickstart-api"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        seen: dict[str, float] = {}
        answered: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(60):
                while True:
                    try:
                        await client.get("/orders/0")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            answered["/orders/0"] = time.monotonic()

            async def watch() -> None:
                # Another process stores the rows; PostgreSQL is where they show, so poll it.
                while len(seen) < REQUESTS:
                    for (url,) in await db.fetch(
                        "SELECT url FROM tail_events WHERE script = 'quickstart-api'"
                    ):
                        seen.setdefault(
                            url.removeprefix(f"http://127.0.0.1:{port}"), time.monotonic()
                        )
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            for n in range(1, REQUESTS):
                response = await client.get(f"/orders/{n}")
                assert response.json() == {"order_id": n}
                answered[f"/orders/{n}"] = time.monotonic()
                await asyncio.sleep(0.05)  # a steady trickle, as a service's traffic is
            async with asyncio.timeout(120):
                await watcher
        assert set(seen) == set(answered)
        logs = await db.fetch(
            "SELECT message, data FROM tail_logs WHERE script = 'quickstart-api' ORDER BY ts"
        )
        assert len(logs) == REQUESTS
        assert all(row["message"] == "order looked up" for row in logs)
        latencies = sorted((seen[path] - answered[path]) * 1000 for path in answered)
        p50 = statistics.median(latencies)
        p95 = latencies[int(len(latencies) * 0.95) - 1]
        print(f"\nquickstart request -> row: p50 {p50:.0f} ms, p95 {p95:.0f} ms, n {REQUESTS}")
    finally:
        server.terminate()
        async with asyncio.timeout(30):
            _, stderr = await server.communicate()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    assert server.returncode in (0, -signal.SIGTERM), stderr.decode()


@pytest.mark.parametrize(
    ("script", "service", "messages"),
    [
        (
            "worker.py",
            "quickstart-worker",
            ["export started", "github /repos/{owner}/{repo} 200 in 183ms"],
        ),
        ("bridge.py", "quickstart-bridge", ["slow query: 812 ms"]),
    ],
)
async def test_the_script_quickstarts_store_their_records(
    workdir: Path,
    migrated: Settings,
    db: asyncpg.Connection,
    replicas: list[Replica],
    script: str,
    service: str,
    messages: list[str],
) -> None:
    settings = migrated
    await ensure_topics(settings, {settings.topic: 2})
    replicas.append(Replica(settings))
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        cwd=workdir,
        env=user_env(settings, service),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        _, stderr = await done.communicate()
    assert done.returncode == 0, stderr.decode()
    async with asyncio.timeout(60):
        # Another process stores the rows; PostgreSQL is where they show, so poll it.
        while await rows(db, service) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    stored = await db.fetch(
        "SELECT message FROM tail_logs WHERE script = $1 ORDER BY ts, seq", service
    )
    assert [row["message"] for row in stored] == messages
    if script == "worker.py":
        event_type = await db.fetchval(
            "SELECT event_type FROM tail_events WHERE script = $1", service
        )
        assert event_type == "job"
        kinds = await db.fetch(
            "SELECT kind FROM tail_logs WHERE script = $1 ORDER BY ts, seq", service
        )
        assert [row["kind"] for row in kinds] == [None, "api_call"]
