"""What the API's numbers mean (issue 20): CPU time only where it was measured, levels by their
usual names and in lists, and API usage with models, endpoints and rate-limit readings apart.

Rows are stored the way a flush stores them (the transformer, binary COPY, the rollup upserts)
into the real PostgreSQL, and read back through the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from fastapi.testclient import TestClient

from pipeline.logger.trace import Trace
from pipeline.postgres import flush
from pipeline.postgres.day_partitions import PartitionManager
from pipeline.postgres.rollup_upserts import merge_rollups
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer
from tests.support.api import get, signed_in

READ = "read-token-0123456789"
NOW_MS = int(time.time() * 1000)
T0 = NOW_MS - 3_600_000  # an hour ago: inside every default window
TRANSFORMER = Transformer(Extractor.from_files())


def trace_item(script: str, offset: int, **fields: Any) -> dict[str, Any]:
    """A Workers trace item (no envelope): a fetch with the given top-level fields."""
    return {
        "scriptName": script,
        "outcome": "ok",
        "eventTimestamp": T0 + offset,
        "event": {"request": {"url": "https://x.test/", "method": "GET"}},
        "logs": [],
        "exceptions": [],
        **fields,
    }


async def store(db: asyncpg.Connection, values: list[bytes]) -> None:
    """Transform `values` as one batch and store it as a flush does: COPY, then the rollups."""
    batch = Batch()
    for offset, value in enumerate(values):
        TRANSFORMER.add(batch, "events", 0, offset, T0 + offset, None, value)
    assert not any(part.dead for part in batch.parts.values())
    await PartitionManager().ensure(db, flush.days_of(batch))
    async with db.transaction():
        await flush.copy_rows(db, batch)
        await merge_rollups(db, batch)


@pytest.fixture
def client(migrated: Settings) -> Iterator[TestClient]:
    with signed_in(migrated, READ) as c:
        yield c


# -- 1. CPU time only where it was measured ------------------------------------------------


async def test_cpu_time_a_python_service_never_measured_is_null_not_zero(
    client: TestClient, db: asyncpg.Connection
) -> None:
    # The logger's own envelope, as it encodes it now; and as its older copies did, with
    # `"cpuTime": 0` they never measured. A Workers trace item's 0 ms is measured: kept.
    job = Trace("py-svc", {"job": {"name": "nightly"}}, timestamp_ms=T0)
    old = orjson.loads(Trace("py-svc", {"job": {"name": "hourly"}}, timestamp_ms=T0 + 1)
                       .finish("ok", wall_ms=30))  # fmt: skip
    old["cpuTime"] = 0
    await store(db, [
        job.finish("ok", wall_ms=40),
        orjson.dumps(old),
        orjson.dumps(trace_item("worker", 2, cpuTime=0, wallTime=5)),
        orjson.dumps(trace_item("worker", 3, cpuTime=7, wallTime=9)),
    ])  # fmt: skip

    cpu = await db.fetch("SELECT script, cpu_ms FROM tail_events ORDER BY script, cpu_ms")
    assert [tuple(r) for r in cpu] == [("py-svc", None), ("py-svc", None), ("worker", 0),
                                       ("worker", 7)]  # fmt: skip

    python = get(client, "/api/logs/performance", script="py-svc")["overall"]
    assert python["requests"] == 2
    assert python["wall_ms"]["measured"] == 2
    assert python["wall_ms"]["p95"] == pytest.approx(40, rel=0.01)
    assert python["cpu_ms"] == {
        "measured": 0, "avg": None, "p50": None, "p95": None, "p99": None, "max": None
    }  # fmt: skip
    worker = get(client, "/api/logs/performance", script="worker")["overall"]
    assert worker["cpu_ms"]["measured"] == 2
    assert worker["cpu_ms"]["p50"] == 0.0  # a genuine 0 ms stays 0
    assert worker["cpu_ms"]["max"] == 7
    # Over every script, the Python service's invocations are left out of CPU, not zeros.
    overall = get(client, "/api/logs/performance")["overall"]
    assert overall["requests"] == 4
    assert overall["cpu_ms"]["measured"] == 2
    assert overall["cpu_ms"]["avg"] == pytest.approx(3.5)
    [hour] = get(client, "/api/logs/performance", script="py-svc")["hours"]
    assert hour["cpu_ms"]["p99"] is None


# -- 2. Levels --------------------------------------------------------------------------------


async def test_levels_take_their_usual_names_and_lists(
    client: TestClient, db: asyncpg.Connection
) -> None:
    lines = [
        {"timestamp": T0 + i, "level": level, "message": [f"{level} line"]}
        for i, level in enumerate(("debug", "info", "log", "warn", "error"))
    ]
    exception = {"timestamp": T0 + 9, "name": "TypeError", "message": "x is undefined"}
    item = trace_item("levels", 0, outcome="exception", logs=lines, exceptions=[exception])
    await store(db, [orjson.dumps(item)])

    def levels(**params: Any) -> list[str]:
        return sorted(line["level"] for line in get(client, "/api/logs/recent", **params)["logs"])

    assert levels(level="warning") == ["warn"]
    assert levels(level="WARN") == ["warn"]
    assert levels(level="critical") == levels(level="fatal") == ["error"]
    assert levels(level="information") == ["info"]
    assert levels(level="error") == ["error"]  # console.error only: an exception is apart
    assert levels(level="exception") == ["exception"]
    assert levels(level="error,exception") == ["error", "exception"]
    assert levels(level=["error", "exception"]) == ["error", "exception"]  # repeated
    assert levels(level="err, warning") == ["error", "warn"]
    assert len(levels()) == 6

    for bad in ("bogus", "errors", "error,"):
        response = client.get("/api/logs/recent", params={"level": bad})
        assert response.status_code == 422, bad
        message = response.json()["error"]
        assert message.startswith("level: unknown level"), message
        assert "level=error,exception" in message
    # The levels are documented where the API is: in its OpenAPI description.
    [param] = [
        p for p in client.get("/openapi.json").json()["paths"]["/api/logs/recent"]["get"]
        ["parameters"] if p["name"] == "level"
    ]  # fmt: skip
    assert "error,exception" in param["description"]
    assert "warning is warn" in param["description"]


# -- 3. API usage: models, endpoints and rate-limit readings ------------------------------


CLAUDE = {
    "model": "claude-sonnet-4-5-20250929",
    "usage": {"input_tokens": 100, "output_tokens": 20},
}


def envelope_with_records(records: list[dict[str, Any]]) -> bytes:
    """The logger's envelope with `api_call` records (`log.api_call(...)`)."""
    item = orjson.loads(Trace("repo-api", {"job": {"name": "sync"}}, timestamp_ms=T0)
                        .finish("ok", wall_ms=10))  # fmt: skip
    item["logs"] = [
        {"timestamp": T0 + 10 + i, "level": "info", "message": ["api call"],
         "record": {"type": "api_call", **record}}
        for i, record in enumerate(records)
    ]  # fmt: skip
    return orjson.dumps(item)


async def test_api_usage_says_model_or_endpoint_and_keeps_readings_apart(
    client: TestClient, db: asyncpg.Connection
) -> None:
    await store(db, [
        orjson.dumps(trace_item("llm-router", 0, logs=[
            {"timestamp": T0, "level": "log", "message": ["anthropic response", CLAUDE]},
            {"timestamp": T0 + 1, "level": "log", "message": ["github ratelimit remaining=4981"
                                                              " limit=5000"]},
        ])),
        envelope_with_records([
            {"provider": "github", "endpoint": "/repos/{owner}/{repo}", "status": 200,
             "rate_limit_remaining": 4711},
            {"provider": "github", "endpoint": "/repos/{owner}/{repo}", "status": 429,
             "rate_limit_remaining": 0},
            {"provider": "github", "status": 500},
        ]),
    ])  # fmt: skip
    usage = get(client, "/api/logs/api-usage")
    names = {(d["provider"], d["model"], d["endpoint"]): d for d in usage["days"]}
    assert set(names) == {
        ("anthropic", "claude-sonnet-4-5-20250929", None),
        ("github", None, "/repos/{owner}/{repo}"),
        ("github", None, None),  # a call that named no endpoint
    }
    assert all(d["calls"] > 0 for d in usage["days"]), "a reading is not a call"
    claude = names[("anthropic", "claude-sonnet-4-5-20250929", None)]
    assert (claude["calls"], claude["tokens_in"], claude["tokens_out"]) == (1, 100, 20)
    assert claude["cost_usd"] is not None
    repos = names[("github", None, "/repos/{owner}/{repo}")]
    assert (repos["calls"], repos["failures"], repos["rate_limited"]) == (2, 1, 1)
    assert (repos["cost_usd"], repos["unpriced_calls"]) == (None, 0)
    assert usage["total"]["calls"] == 4
    assert usage["total"]["rate_limited"] == 1
    by_model = {(m["provider"], m["model"], m["endpoint"]): m["calls"] for m in usage["by_model"]}
    assert by_model == {k: v["calls"] for k, v in names.items()}

    [github] = usage["rate_limits"]
    # Three readings: the line alone, and the two calls' (the newest by event time wins).
    assert (github["provider"], github["limit"], github["limited"]) == ("github", 5000, 1)
    assert github["remaining"] == 0
    assert not {"model", "endpoint", "calls"} & set(github)
