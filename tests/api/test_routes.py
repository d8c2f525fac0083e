"""The query API against data stored by the real pipeline: each endpoint's numbers checked
against an independent computation over the raw rows, plus auth, validation and pagination."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from pipeline.api import cursor
from pipeline.api.app import create_app
from pipeline.errors import SettingsError
from pipeline.kafka import clients
from pipeline.settings import Settings
from tests.conftest import ROOT, env_of, free_port
from tests.support.api import get, signed_in
from tests.support.faults import wait_for
from tests.support.replica import Replica, produce, wait_stored

READ, WRITE = "read-token-0123456789", "write-token-0123456789"
ORIGIN = ("offset", "partition", "item", "seq")  # after ts, the keyset's order
N = 3000
HOURS_OF_DATA = 20


@pytest.fixture
async def stored(migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]) -> Settings:
    """N synthetic messages over the last 20 hours, stored by a real replica."""
    settings = replace(migrated, api_read_tokens=(READ,), api_write_tokens=(WRITE,))
    await clients.ensure_topics(settings, {settings.topic: 3})
    now_ms = int(time.time() * 1000)
    step = HOURS_OF_DATA * 3_600_000 // N
    produced = await produce(
        settings, N, seed=41, poison_ratio=0.01, start_ms=now_ms - HOURS_OF_DATA * 3_600_000,
        step_ms=step,
    )  # fmt: skip
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 90)
    assert replicas[0].terminate() == 0
    return settings


@pytest.fixture
def client(stored: Settings) -> Iterator[TestClient]:
    with signed_in(stored, READ) as c:
        yield c


def nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


async def test_recent_logs_pages_are_complete_and_stable_while_rows_arrive(
    client: TestClient, db: asyncpg.Connection
) -> None:
    expected = await db.fetch(
        "SELECT kafka_partition, kafka_offset, item, seq FROM tail_logs"
        " WHERE ts >= now() - interval '24 hours' AND level = 'error'"
        " ORDER BY ts DESC, kafka_offset DESC, kafka_partition DESC, item DESC, seq DESC"
    )
    assert len(expected) > 50
    seen: list[tuple[int, int, int, int]] = []
    page = get(client, "/api/logs/recent", hours=24, level="error", limit=17)
    inserted = 0
    while True:
        seen += [
            (o["partition"], o["offset"], o["item"], o["seq"])
            for o in (line["origin"] for line in page["logs"])
        ]
        assert all(line["level"] == "error" for line in page["logs"])
        # Rows keep arriving between pages: newer ones, and one just behind the cursor.
        await db.execute(
            "INSERT INTO tail_logs (ts, script, event_type, outcome, level, message, topic,"
            " kafka_partition, kafka_offset, item, seq)"
            " VALUES (now(), 'late', 'fetch', 'ok', 'error', 'new', 'other', 0, $1, 0, 0)",
            10_000_000 + inserted,
        )
        inserted += 1
        if page["next_cursor"] is None:
            break
        page = get(client, "/api/logs/recent", level="error", limit=17, cursor=page["next_cursor"])
    assert seen == [tuple(r) for r in expected]


def test_forged_edited_and_overreaching_cursors_get_422(
    client: TestClient, stored: Settings
) -> None:
    first = get(client, "/api/logs/recent", hours=24, limit=5)
    real = first["next_cursor"]
    second = get(client, "/api/logs/recent", limit=5, cursor=real)
    assert second["window"] == first["window"]
    order = [
        (datetime.fromisoformat(line["ts"]), *(line["origin"][k] for k in ORIGIN))
        for line in first["logs"] + second["logs"]
    ]
    assert order == sorted(order, reverse=True)
    assert len(set(order)) == 10, "the second page goes on where the first ended"

    raw = base64.urlsafe_b64decode(real + "=" * (-len(real) % 4))
    edited = bytearray(raw)
    edited[5] ^= 0x01  # a bit of the window's start: 17 s earlier or later
    now = datetime.now(UTC)
    at = cursor.Position(now - timedelta(hours=1), 0, 0, 0, 0, stored.topic)
    key = cursor.key_for((READ, WRITE))
    ancient = datetime(1970, 1, 1, tzinfo=UTC)
    hand_made = [1, 0, 253_402_300_799_000_000, 0, 0, 0, 0, 0, stored.topic]  # 8,000 years
    forged = {
        "edited": base64.urlsafe_b64encode(bytes(edited)).decode().rstrip("="),
        "hand-made": base64.urlsafe_b64encode(orjson.dumps(hand_made)).decode(),
        "another key": cursor.encode(cursor.Cursor(now - timedelta(hours=2), now, at),
                                     cursor.key_for(("someone-else's-token",))),
        "over-long": cursor.encode(cursor.Cursor(ancient, now, at), key),
        "in the future": cursor.encode(
            cursor.Cursor(now, now + timedelta(hours=2), cursor.Position(now, 0, 0, 0, 0, "t")),
            key,
        ),
    }  # fmt: skip
    for what, text in forged.items():
        response = client.get("/api/logs/recent", params={"cursor": text})
        assert response.status_code == 422, what
        assert response.json()["error"].startswith("cursor: "), what
    # Signed with this API's key and inside the limits: taken.
    assert get(client, "/api/logs/recent", cursor=cursor.encode(
        cursor.Cursor(now - timedelta(hours=2), now, at), key))["window"]  # fmt: skip

    # New tokens, new key: every outstanding cursor is refused, and a first page works.
    rotated = replace(stored, api_read_tokens=("rotated-token-0123456789",))
    with TestClient(create_app(rotated)) as other:
        other.headers["Authorization"] = "Bearer rotated-token-0123456789"
        refused = other.get("/api/logs/recent", params={"cursor": real})
        assert refused.status_code == 422
        assert "tokens changed" in refused.json()["error"]
        assert other.get("/api/logs/recent", params={"limit": 5}).status_code == 200


async def test_recent_logs_filters_and_search_combine(
    client: TestClient, db: asyncpg.Connection
) -> None:
    row = await db.fetchrow(
        "SELECT script, message FROM tail_logs WHERE level = 'log' AND length(message) > 12"
        " ORDER BY ts DESC LIMIT 1"
    )
    assert row is not None
    needle = row["message"][3:12]
    expected = await db.fetchval(
        "SELECT count(*) FROM tail_logs WHERE ts >= now() - interval '24 hours'"
        " AND script = $1 AND level = 'log' AND strpos(message, $2) > 0",
        row["script"], needle,
    )  # fmt: skip
    body = get(client, "/api/logs/recent", script=row["script"], level="log", q=needle, limit=1000)
    assert len(body["logs"]) == expected >= 1
    assert all(needle in line["message"] for line in body["logs"])
    assert get(client, "/api/logs/recent", q="%_no such text_%")["logs"] == []


async def test_errors_counts_trend_and_status_changes(
    client: TestClient, db: asyncpg.Connection
) -> None:
    since = (datetime.now(UTC) - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)
    expected = {
        r[0]: r[1]
        for r in await db.fetch(
            "SELECT fingerprint, count(*) FROM tail_logs WHERE level = 'exception'"
            " AND ts >= $1 GROUP BY 1",
            since,
        )
    }
    body = get(client, "/api/logs/errors", hours=6, limit=1000)
    got = {e["fingerprint"]: e for e in body["errors"]}
    assert {fp: e["occurrences"] for fp, e in got.items()} == expected
    some = max(got.values(), key=lambda e: e["occurrences"])
    assert sum(h["occurrences"] for h in some["trend"]) == some["occurrences"]
    assert some["status"] == "open"

    path = f"/api/errors/{some['fingerprint']}"
    denied = client.patch(path, json={"status": "resolved"})
    assert denied.status_code == 403
    changed = client.patch(
        path, json={"status": "resolved"}, headers={"Authorization": f"Bearer {WRITE}"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "resolved"
    assert changed.json()["resolved_at"] is not None
    status = await db.fetchval(
        "SELECT status FROM error_summary WHERE fingerprint = $1", some["fingerprint"]
    )
    assert status == "resolved"
    missing = client.patch(
        "/api/errors/0000000000000000",
        json={"status": "ignored"},
        headers={"Authorization": f"Bearer {WRITE}"},
    )
    assert missing.status_code == 404
    bad = client.patch(path, json={"status": "gone"}, headers={"Authorization": f"Bearer {WRITE}"})
    assert bad.status_code == 422


@pytest.mark.parametrize("script", [None, "api-gateway"])
async def test_performance_matches_the_raw_rows(
    client: TestClient, db: asyncpg.Connection, script: str | None
) -> None:
    since = (datetime.now(UTC) - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    rows = await db.fetch(
        "SELECT outcome, wall_ms, cpu_ms FROM tail_events WHERE ts >= $1"
        " AND ($2::text IS NULL OR script = $2)",
        since, script,
    )  # fmt: skip
    params = {"hours": 24} if script is None else {"hours": 24, "script": script}
    body = get(client, "/api/logs/performance", **params)
    overall = body["overall"]
    assert overall["requests"] == len(rows)
    assert overall["errors"] == sum(r["outcome"] != "ok" for r in rows)
    for column in ("wall_ms", "cpu_ms"):
        values = [r[column] for r in rows if r[column] is not None]
        got = overall[column]
        assert got["measured"] == len(values)
        assert got["avg"] == pytest.approx(sum(values) / len(values), abs=0.0005)
        assert got["max"] == max(values)
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            exact = nearest_rank(values, q)
            assert got[name] == pytest.approx(exact, rel=0.01, abs=0.5), (column, name)
    assert sum(h["requests"] for h in body["hours"]) == len(rows)


async def test_api_usage_and_scans_sum_their_rollups(
    client: TestClient, db: asyncpg.Connection
) -> None:
    usage = get(client, "/api/logs/api-usage", hours=48)
    day = (datetime.now(UTC) - timedelta(hours=48)).date()
    sums = await db.fetchrow(
        "SELECT sum(calls), sum(tokens_in + tokens_out) FROM api_calls_daily WHERE day >= $1", day
    )
    assert sums is not None
    calls, tokens = sums
    assert usage["total"]["calls"] == calls > 0
    assert usage["total"]["tokens_in"] + usage["total"]["tokens_out"] == tokens > 0
    assert sum(m["calls"] for m in usage["by_model"]) == calls
    assert any(m["cost_usd"] is None for m in usage["by_model"] if m["model"] == "mystery-model-x")
    cache_sums = await db.fetchrow(
        "SELECT sum(cache_read_tokens), sum(cache_write_tokens) FROM api_calls_daily"
        " WHERE day >= $1",
        day,
    )
    assert cache_sums is not None
    cache_read, cache_write = cache_sums
    total = usage["total"]
    assert (total["cache_read_tokens"], total["cache_write_tokens"]) == (cache_read, cache_write)
    # The synthetic GitHub readings, `github ratelimit remaining=N limit=5000`, carry a limit
    # and no reset; they are readings, apart from the calls, per day and provider.
    github = [r for r in usage["rate_limits"] if r["provider"] == "github"]
    assert github
    assert all(r["limit"] == 5000 and r["reset"] is None for r in github)
    assert all(d["calls"] > 0 for d in usage["days"]), "a reading is not a call"
    # A model only for LLM calls, an endpoint for the others; never both.
    assert all(d["model"] is None or d["endpoint"] is None for d in usage["days"])
    assert {d["model"] for d in usage["days"] if d["provider"] == "github"} <= {None}

    scans = get(client, "/api/logs/scan-activity", hours=48)
    since = (datetime.now(UTC) - timedelta(hours=48)).replace(minute=0, second=0, microsecond=0)
    started = await db.fetchval(
        "SELECT sum(started) FROM scan_activity_hourly WHERE hour >= $1", since
    )
    assert scans["total"]["started"] == started > 0


async def test_critical_alerts_one_per_script_outcome_and_window(
    client: TestClient, db: asyncpg.Connection
) -> None:
    outcomes = ["exception", "exceededCpu", "exceededMemory", "scriptNotFound"]
    expected = {
        (r[0], r[1]): (r[2], r[3])
        for r in await db.fetch(
            "SELECT script, outcome, count(DISTINCT floor(extract(epoch FROM ts) / 900)),"
            " count(*) FROM tail_events WHERE outcome = ANY($1) GROUP BY 1, 2",
            outcomes,
        )
    }
    assert expected
    alerts = get(client, "/api/logs/critical-alerts", hours=24, limit=1000)["alerts"]
    got: dict[tuple[str, str], list[int]] = {}
    for alert in alerts:
        if alert["rule"] == "outcome":
            outcome = alert["dedup_key"].rsplit(":", 1)[1]
            windows, occurrences = got.setdefault((alert["script"], outcome), [0, 0])
            got[(alert["script"], outcome)] = [windows + 1, occurrences + alert["occurrences"]]
    assert {k: tuple(v) for k, v in got.items()} == expected
    assert all(a["severity"] == "critical" for a in alerts if a["rule"] == "outcome")
    assert [a["last_at"] for a in alerts] == sorted((a["last_at"] for a in alerts), reverse=True)


async def test_scripts_and_the_script_filters_match_the_raw_rows(
    client: TestClient, db: asyncpg.Connection
) -> None:
    since = (datetime.now(UTC) - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    expected = await db.fetch(
        "SELECT script, count(*) AS n, count(*) FILTER (WHERE outcome <> 'ok') AS errors,"
        " max(wall_ms) AS peak FROM tail_events WHERE ts >= $1"
        " GROUP BY script ORDER BY n DESC, script",
        since,
    )
    body = get(client, "/api/logs/scripts", hours=24)
    got = [(s["script"], s["requests"], s["errors"], s["wall_ms"]["max"]) for s in body["scripts"]]
    assert got == [(r["script"], r["n"], r["errors"], r["peak"]) for r in expected]
    assert len(get(client, "/api/logs/scripts", hours=24, limit=2)["scripts"]) == 2
    busiest = body["scripts"][0]
    walls = [
        r[0] for r in await db.fetch(
            "SELECT wall_ms FROM tail_events WHERE ts >= $1 AND script = $2"
            " AND wall_ms IS NOT NULL", since, busiest["script"],
        )
    ]  # fmt: skip
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        exact = nearest_rank(walls, q)
        assert busiest["wall_ms"][name] == pytest.approx(exact, rel=0.01, abs=0.5), name

    # Each view's script filter keeps that script's part only.
    script = "api-gateway"
    fingerprints = {
        r[0] for r in await db.fetch(
            "SELECT DISTINCT fingerprint FROM tail_logs WHERE level = 'exception'"
            " AND ts >= $1 AND script = $2", since, script,
        )
    }  # fmt: skip
    errors = get(client, "/api/logs/errors", hours=24, limit=1000, script=script)["errors"]
    assert {e["fingerprint"] for e in errors} == fingerprints
    assert all(script in e["scripts"] for e in errors)
    scans = get(client, "/api/logs/scan-activity", hours=24, script="repo-scanner")["hours"]
    assert scans
    assert {h["script"] for h in scans} == {"repo-scanner"}
    alerts = get(client, "/api/logs/critical-alerts", hours=24, script=script)["alerts"]
    assert alerts
    assert {a["script"] for a in alerts} == {script}


def test_every_api_route_needs_a_token(client: TestClient) -> None:
    paths = [
        f"/api/logs/{name}"
        for name in ("recent", "errors", "performance", "scripts", "api-usage",
                     "scan-activity", "critical-alerts")
    ]  # fmt: skip
    for path in paths:
        for header in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                       {"Authorization": f"Basic {READ}"}):  # fmt: skip
            response = client.get(path, headers=header)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert client.get("/readyz", headers={"Authorization": ""}).status_code == 200


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"hours": 0}, "hours"),
        ({"hours": 2161}, "hours"),
        ({"hours": "day"}, "hours"),
        ({"limit": 1001}, "limit"),
        ({"hour": 24}, "hour"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_parameters_get_422_naming_them(
    client: TestClient, params: dict[str, Any], named: str
) -> None:
    response = client.get("/api/logs/recent", params=params)
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{named}:")


def test_an_api_without_tokens_is_refused(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="TAILPIPE_API_READ_TOKENS"):
        create_app(settings)


def test_openapi_and_docs_are_served_without_a_cdn(client: TestClient) -> None:
    spec = get(client, "/openapi.json")
    assert {"/api/logs/recent", "/api/logs/errors", "/api/logs/performance",
            "/api/logs/api-usage", "/api/logs/scan-activity", "/api/logs/critical-alerts",
            "/api/errors/{fingerprint}"} <= spec["paths"].keys()  # fmt: skip
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    script = client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert len(script.content) > 100_000


def test_without_the_database_readyz_and_routes_answer_503(settings: Settings) -> None:
    down = replace(
        settings,
        api_read_tokens=(READ,),
        postgres_dsn=f"postgresql://tailpipe@127.0.0.1:{free_port()}/tailpipe",
        connect_timeout=1.0,
    )
    with TestClient(create_app(down)) as c:
        c.headers["Authorization"] = f"Bearer {READ}"
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert "database" in ready.json()["error"]
        response = c.get("/api/logs/recent")
        assert response.status_code == 503
        assert response.json() == {"error": "the database is unavailable; retry later"}


async def test_serve_runs_until_sigterm_and_exits_0(migrated: Settings) -> None:
    """`tailpipe api` stopped by SIGTERM exited -15 (uvicorn raises the signal again after its
    graceful shutdown); a unit's RestartPreventExitStatus and a rollout expect 0."""
    port = free_port()
    env = {**os.environ, **env_of(migrated), "TAILPIPE_API_PORT": str(port),
           "TAILPIPE_API_READ_TOKENS": READ}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "api", "--host", "127.0.0.1", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: _answers(client, "/healthz"), 30, "the API is up")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _answers(client: httpx.AsyncClient, path: str) -> bool:
    try:
        return (await client.get(path)).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False
