"""Releases and environments: the logger's `release` and `environment` on every line, and
`/api/logs/recent?release=&environment=`, for the logger's envelopes and a Worker's script
version alike, stored by a real replica into the real PostgreSQL, read through the real API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest
from fastapi.testclient import TestClient

from pipeline.formats.identity import item_key, value_key
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.logger import tailpipe_logger
from pipeline.settings import Settings
from tests.api.test_invocations import now_item
from tests.logger.test_envelope import Captured
from tests.support.api import get, signed_in
from tests.support.replica import Replica, wait_stored

READ = "read-token-0123456789"
BROKEN = "2026.12.2"
"""The release whose nightly job raises: one exception line per deploy of it."""
DEPLOYS = [("2026.12.1", "production"), ("2026.12.2", "production"), ("2026.12.2", "staging")]


@pytest.fixture
async def client(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> AsyncIterator[TestClient]:
    settings = replace(migrated, api_read_tokens=(READ,))
    await clients.ensure_topics(settings, {settings.topic: 2})
    messages: list[tuple[bytes, bytes]] = []
    for release, environment in DEPLOYS:
        captured = Captured()
        log = tailpipe_logger(
            "billing", publisher=captured, release=release, environment=environment
        )
        log.info(f"started {release} in {environment}")
        with contextlib.suppress(LookupError), log.job("nightly"):
            log.warn(f"slow in {release}")
            if release == BROKEN:
                raise LookupError(f"no stock for sku in {release}")
        messages.extend((value_key(value), value) for value in captured.values)
    worker = now_item("trace/fetch.json", int(time.time() * 1000) - 600_000)
    messages.append((item_key(worker), orjson.dumps(worker)))
    async with BulkPublisher(settings, settings.topic) as publisher:
        for key, value in messages:
            await publisher.add(key, value)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(messages), 90)
    with signed_in(settings, READ) as c:
        yield c


def lines(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = get(client, "/api/logs/recent", hours=24, limit=1000, **params)[
        "logs"
    ]
    return logs


def lines_of(deploys: Iterable[tuple[str, str]]) -> int:
    """Two lines per deploy, and the exception of the broken release's job."""
    return sum(3 if release == BROKEN else 2 for release, _ in deploys)


def test_every_line_carries_its_release_and_environment(client: TestClient) -> None:
    billing = [line for line in lines(client) if line["script"] == "billing"]
    assert len(billing) == lines_of(DEPLOYS)
    for line in billing:
        release, environment = line["release"], line["environment"]
        assert (release, environment) in DEPLOYS
        assert release in line["message"]
    (worker,) = {line["release"] for line in lines(client, script="api-gateway")}
    assert worker is not None  # a Worker's script version is its release


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"release": "2026.12.2"}, {("2026.12.2", "production"), ("2026.12.2", "staging")}),
        ({"environment": "production"}, {("2026.12.1", "production"), ("2026.12.2", "production")}),
        ({"release": "2026.12.2", "environment": "staging"}, {("2026.12.2", "staging")}),
        ({"release": "2026.11.9"}, set()),
    ],
)
def test_lines_filter_by_release_and_environment(
    client: TestClient, params: dict[str, str], expected: set[tuple[str, str]]
) -> None:
    found = lines(client, **params)
    assert {(line["release"], line["environment"]) for line in found} == expected
    assert len(found) == lines_of(expected)


def test_a_worker_s_script_version_filters_as_a_release(client: TestClient) -> None:
    (version,) = {line["release"] for line in lines(client, script="api-gateway")}
    found = lines(client, release=version)
    assert found
    assert {line["script"] for line in found} == {"api-gateway"}


@pytest.mark.parametrize(
    ("params", "occurrences"),
    [
        ({}, 2),
        ({"release": BROKEN}, 2),
        ({"release": BROKEN, "environment": "staging"}, 1),
        ({"environment": "staging", "script": "billing"}, 1),
        ({"release": "2026.12.1"}, None),
    ],
)
def test_error_groups_by_release_and_environment(
    client: TestClient, params: dict[str, str], occurrences: int | None
) -> None:
    found = get(client, "/api/logs/errors", hours=24, **params)["errors"]
    groups = [group for group in found if group["name"] == "LookupError"]
    if occurrences is None:
        assert groups == []
        return
    (group,) = groups
    assert group["occurrences"] == occurrences
    assert sum(point["occurrences"] for point in group["trend"]) == occurrences
