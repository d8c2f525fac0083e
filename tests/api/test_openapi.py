"""schemathesis against a real `tailpipe api` process over data the real pipeline stored:
no input gets a server error, and every response matches the published schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks

from pipeline.kafka import clients
from pipeline.postgres.connect import connect
from pipeline.settings import Settings, load
from tests.conftest import ROOT, env_of, free_port, tailpipe, unique
from tests.support.replica import Replica, produce, wait_stored

# Its module fixtures start services against the local stack.
pytestmark = pytest.mark.stack

TOKEN = "schema-test-token-0123456789"


async def _seed(settings: Settings) -> None:
    conn = await connect(load())
    await conn.execute(f'CREATE SCHEMA "{settings.postgres_schema}"')
    await conn.close()
    assert tailpipe("migrate", env=env_of(settings)).returncode == 0
    await clients.ensure_topics(settings, {settings.topic: 2})
    now_ms = int(time.time() * 1000)
    produced = await produce(settings, 600, seed=51, poison_ratio=0.01,
                             start_ms=now_ms - 10 * 3_600_000, step_ms=60_000)  # fmt: skip
    replica = Replica(settings)
    try:
        conn = await connect(settings)
        await wait_stored(conn, settings.topic, produced.count, 90)
        await conn.close()
    finally:
        assert replica.terminate() == 0


async def _drop(settings: Settings) -> None:
    conn = await connect(load())
    await conn.execute(f'DROP SCHEMA "{settings.postgres_schema}" CASCADE')
    await conn.close()


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    base = load()
    settings = replace(
        base, postgres_schema=unique("schema"), topic=unique("events"), group=unique("group"),
        dlq_url=f"s3://{base.dlq_bucket}/{unique('dlq')}",
    )  # fmt: skip
    asyncio.run(_seed(settings))
    port = free_port()
    env = {**os.environ, **env_of(settings), "TAILPIPE_API_PORT": str(port),
           "TAILPIPE_API_READ_TOKENS": TOKEN}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "api", "--host", "127.0.0.1"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # another process starting: its /readyz is where it shows
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "tailpipe api did not become ready"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        asyncio.run(_drop(settings))


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


CHECKS = [
    not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def test_no_server_error_and_every_response_matches_the_schema(
    api_schema: schemathesis.BaseSchema,
) -> None:
    # Hypothesis drives each operation's strategy directly: schemathesis's pytest plugin does
    # not run on this pytest, and this keeps one test for the whole API.
    operations = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the schema has no invalid operation
        operations.append(result.ok())
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=80,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)

        run()
