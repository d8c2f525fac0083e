"""Critical alerts end to end with the real Kafka and PostgreSQL: recorded with the events that
cause them, one per dedup key and window across replicas, and on the alerts topic."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient

from pipeline.alerts import destinations
from pipeline.alerts.outbox import Outbox
from pipeline.api.app import create_app
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.conftest import free_port, read_topic
from tests.support.faults import wait_for
from tests.support.replica import Replica, stored_total, wait_stored

WINDOW_MS = 15 * 60_000


def trace(script: str, outcome: str, ms: int, exception: str | None = None) -> bytes:
    item: dict[str, Any] = {
        "scriptName": script, "outcome": outcome, "eventTimestamp": ms,
        "logs": [{"level": "log", "message": ["working"], "timestamp": ms}],
        "exceptions": [],
    }  # fmt: skip
    if exception:
        item["exceptions"] = [{"name": "Error", "message": exception, "timestamp": ms}]
    return orjson.dumps(item)


def mid_window_ms() -> int:
    """Now, or a bit earlier, so that the events of a test share one cooldown window."""
    now = int(time.time() * 1000)
    return now - now % WINDOW_MS + 60_000 if now % WINDOW_MS > 60_000 else now


async def publish(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    async with BulkPublisher(settings, settings.topic) as publisher:
        for key, value in values:
            await publisher.add(key, value)


async def topics(settings: Settings, partitions: int) -> None:
    await clients.ensure_topics(settings, {settings.topic: partitions, settings.alerts_topic: 1})


async def test_an_alert_is_recorded_with_its_events_and_published(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 2)
    replicas.append(Replica(settings))
    at = mid_window_ms()
    await publish(settings, [(b"w", trace("worker-a", "ok", at)),
                             (b"w", trace("worker-a", "exceededCpu", at + 1))])  # fmt: skip
    await wait_stored(db, settings.topic, 2, 60)
    [(key, value)] = await read_topic(replace(settings, topic=settings.alerts_topic), 1)
    alert = orjson.loads(value)
    assert key == b"outcome:worker-a:exceededCpu" == alert["dedup_key"].encode()
    assert alert["rule"] == "outcome"
    assert alert["severity"] == "critical"
    assert alert["script"] == "worker-a"
    assert alert["occurrences"] == 1
    assert alert["details"]["query"].startswith("/api/logs/recent?")
    row = await db.fetchrow("SELECT id::text, published_at FROM critical_alerts")
    assert row is not None
    assert row["id"] == alert["id"]
    assert row["published_at"] is not None
    assert replicas[0].terminate() == 0


async def test_two_replicas_seeing_one_condition_make_one_alert(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 2)
    replicas.extend([Replica(settings), Replica(settings)])
    for replica in replicas:

        def owns_one(r: Replica = replica) -> bool:
            return r.readiness().get("partitions") == 1

        await wait_for(owns_one, 60, "one each")
    at = mid_window_ms()
    # Keys that land on both partitions: each replica sees exceptions of the same script.
    values = [(f"k{n}".encode(), trace("worker-b", "exception", at + n)) for n in range(40)]
    await publish(settings, values)
    await wait_stored(db, settings.topic, 40, 60)
    owners = await db.fetchval(
        "SELECT count(DISTINCT kafka_partition) FROM tail_events WHERE script = 'worker-b'"
    )
    assert owners == 2
    rows = await db.fetch(
        "SELECT id, occurrences FROM critical_alerts WHERE dedup_key = $1",
        "outcome:worker-b:exception",
    )
    assert [r["occurrences"] for r in rows] == [40]
    published = await read_topic(replace(settings, topic=settings.alerts_topic), 1)
    assert orjson.loads(published[0][1])["id"] == str(rows[0]["id"])
    for replica in replicas:
        assert replica.terminate() == 0


async def test_alerts_committed_but_not_published_are_published_on_restart_same_id(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 1)
    # As a replica that committed and crashed before publishing would have left it.
    alert_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO critical_alerts (id, rule, severity, script, dedup_key, window_start,"
        " first_at, last_at, summary) VALUES ($1, 'outcome', 'critical', 'w', 'outcome:w:x',"
        " now(), now(), now(), 'w: an invocation ended with x')",
        alert_id,
    )
    replicas.append(Replica(settings))
    [(_, value)] = await read_topic(replace(settings, topic=settings.alerts_topic), 1)
    assert orjson.loads(value)["id"] == str(alert_id)
    await wait_for(
        lambda: db.fetchval("SELECT published_at IS NOT NULL FROM critical_alerts"), 30, "marked"
    )
    assert replicas[0].terminate() == 0


async def test_new_error_then_regression_after_resolve(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 1)
    replicas.append(Replica(settings))
    at = int(time.time() * 1000) - 60_000
    await publish(settings, [(b"w", trace("worker-c", "ok", at, "cache miss for user 42"))])
    await wait_stored(db, settings.topic, 1, 60)
    fingerprint = await db.fetchval("SELECT fingerprint FROM error_summary")
    rules = {r[0] for r in await db.fetch("SELECT rule FROM critical_alerts")}
    assert rules == {"new_error"}
    await db.execute(
        "UPDATE error_summary SET status = 'resolved', resolved_at = now() - interval '30 s'"
    )
    await publish(settings, [(b"w", trace("worker-c", "ok", at + 50_000, "cache miss for user 7"))])
    await wait_stored(db, settings.topic, 2, 60)
    regression = await db.fetchrow(
        "SELECT dedup_key, severity FROM critical_alerts WHERE rule = 'regression'"
    )
    assert regression is not None
    assert regression["dedup_key"] == f"regression:{fingerprint}"
    assert regression["severity"] == "critical"
    assert await stored_total(db, settings.topic) == 2
    assert replicas[0].terminate() == 0


async def test_flushes_never_wait_on_a_publish_that_cannot_finish(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 1})  # no alerts topic: sends hang
    replicas.append(Replica(settings))
    at = mid_window_ms()
    await publish(settings, [(b"w", trace("worker-d", "exception", at))])
    await wait_stored(db, settings.topic, 1, 60)
    await wait_for(
        lambda: db.fetchval("SELECT claimed_until IS NOT NULL FROM critical_alerts"),
        30,
        "the outbox claimed the alert and is trying to send it",
    )
    # The next flush merges into the same alert row while that send hangs: it must not wait.
    await publish(settings, [(b"w", trace("worker-d", "exception", at + 1))])
    await wait_stored(db, settings.topic, 2, 20)
    row = await db.fetchrow("SELECT occurrences, published_at FROM critical_alerts")
    assert row is not None
    assert row["occurrences"] == 2
    assert row["published_at"] is None
    assert replicas[0].terminate() == 0


async def test_error_rate_over_the_window_alerts_only_the_script_above(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 1)
    replicas.append(Replica(settings))
    at = mid_window_ms()
    values = []
    for n in range(60):  # risky: 20 of 60 fail (33%); steady: 10 of 60 (16.7%), under 20%
        values.append((b"r", trace("risky", "exception" if n % 3 == 0 else "ok", at + n)))
        values.append((b"s", trace("steady", "canceled" if n % 6 == 0 else "ok", at + n)))
    await publish(settings, values)
    await wait_stored(db, settings.topic, 120, 60)
    fired = {
        r["dedup_key"]: r["summary"]
        for r in await db.fetch(
            "SELECT dedup_key, summary FROM critical_alerts WHERE rule = 'error_rate'"
        )
    }
    assert list(fired) == ["error_rate:risky"]
    assert "(20 of 60)" in fired["error_rate:risky"]
    assert replicas[0].terminate() == 0


async def test_anomaly_against_the_same_hour_of_previous_days(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 1)
    at = mid_window_ms()
    day = 24 * 3_600_000
    values = []
    for days_ago in (5, 4, 3, 2, 1, 0):
        for n in range(60):
            # Both fail 5% of the time, every day, until today: moody 30%, calm still 5%.
            moody_fails = n < (18 if days_ago == 0 else 3)
            values.append((b"m", trace("moody", "exception" if moody_fails else "ok",
                                       at - days_ago * day + n)))  # fmt: skip
            values.append((b"c", trace("calm", "canceled" if n < 3 else "ok",
                                       at - days_ago * day + n)))  # fmt: skip
    await publish(settings, values)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, len(values), 60)
    fired = {
        r[0]: r[1]
        for r in await db.fetch(
            "SELECT dedup_key, summary FROM critical_alerts WHERE rule = 'anomaly'"
        )
    }
    assert "anomaly:moody:error_rate" in fired
    assert "baseline 5.0%" in fired["anomaly:moody:error_rate"]
    assert not [key for key in fired if key.startswith("anomaly:calm")]
    assert replicas[0].terminate() == 0


async def test_the_flush_that_makes_an_alert_publishes_it(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 1)
    # The periodic sweep is an hour away: only the flush's wake-up can publish in time.
    replicas.append(Replica(settings, TAILPIPE_ALERT_PUBLISH_INTERVAL="3600"))
    await wait_for(lambda: replicas[0].readiness().get("partitions") == 1, 60, "assigned")
    await publish(settings, [(b"w", trace("worker-e", "exceededMemory", mid_window_ms()))])
    [(key, _)] = await read_topic(replace(settings, topic=settings.alerts_topic), 1)
    assert key == b"outcome:worker-e:exceededMemory"
    assert replicas[0].terminate() == 0


def rate_limit_line(script: str, remaining: int, ms: int) -> bytes:
    return orjson.dumps(
        {"scriptName": script, "outcome": "ok", "eventTimestamp": ms, "exceptions": [],
         "logs": [{"level": "log", "timestamp": ms,
                   "message": [f"github ratelimit remaining={remaining} limit=5000"]}]}
    )  # fmt: skip


async def test_rate_limit_alerts_strictly_below_the_threshold(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await topics(settings, 1)
    replicas.append(Replica(settings))
    at = mid_window_ms()
    await publish(settings, [(b"w", rate_limit_line("scanner", 100, at))])  # threshold: 100
    await wait_stored(db, settings.topic, 1, 60)
    assert await db.fetchval("SELECT count(*) FROM critical_alerts WHERE rule = 'rate_limit'") == 0
    await publish(settings, [(b"w", rate_limit_line("scanner", 99, at + 1))])
    await wait_stored(db, settings.topic, 2, 60)
    row = await db.fetchrow(
        "SELECT dedup_key, summary FROM critical_alerts WHERE rule = 'rate_limit'"
    )
    assert row is not None
    assert row["dedup_key"] == "rate_limit:github"
    assert "remaining 99 (below 100)" in row["summary"]
    assert replicas[0].terminate() == 0


async def test_an_unnamed_script_gets_summaries_and_links_that_work(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """`scriptName: null` (a local runtime, some event types) was stored as ''. An alert's
    summary then began with ': ', and its link `?script=&...` answered 422."""
    settings = replace(migrated, api_read_tokens=("read-token-0123456789",))
    await topics(settings, 1)
    replicas.append(Replica(settings))
    at = mid_window_ms()
    item = orjson.loads(trace("x", "exception", at, exception="boom at step 3"))
    item["scriptName"] = None
    fatal = {"level": "error", "message": ["fatal: upstream failed: 502"], "timestamp": at}
    item["logs"].append(fatal)
    await publish(settings, [(b"", orjson.dumps(item))])
    await wait_stored(db, settings.topic, 1, 60)
    await wait_for(
        lambda: db.fetchval("SELECT count(*) > 0 AND bool_and(published_at IS NOT NULL)"
                            " FROM critical_alerts"), 60, "alerts published",
    )  # fmt: skip
    assert await db.fetchval("SELECT script FROM tail_events") == "(unnamed)"
    total = await db.fetchval("SELECT count(*) FROM critical_alerts")
    published = [
        orjson.loads(v)
        for _, v in await read_topic(replace(settings, topic=settings.alerts_topic), total)
    ]
    assert {a["rule"] for a in published} >= {"outcome", "error_log", "new_error"}
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = "Bearer read-token-0123456789"
        for alert in published:
            assert not alert["summary"].startswith(":"), alert
            if alert["rule"] != "new_error":  # per fingerprint, not per script
                assert alert["script"] == "(unnamed)", alert
                assert alert["summary"].startswith("(unnamed): "), alert
            # The link in the payload, and in the text a chat destination gets.
            link = alert["details"].get("query")
            if link is None:
                continue
            assert link in destinations.text(alert)
            response = client.get(link)
            assert response.status_code == 200, (link, response.text)
            assert response.json()["logs"], link
        for path in ("performance", "errors", "scan-activity", "critical-alerts"):
            response = client.get(f"/api/logs/{path}", params={"script": "(unnamed)"})
            assert response.status_code == 200, (path, response.text)
        scripts = client.get("/api/logs/scripts").json()["scripts"]
        assert [s["script"] for s in scripts] == ["(unnamed)"]
        perf = client.get("/api/logs/performance", params={"script": "(unnamed)"}).json()
        assert perf["overall"]["requests"] == 1
    assert replicas[0].terminate() == 0


async def test_an_outbox_stopped_before_kafka_answered_closes_its_producer(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica stopped while its outbox's producer had not started (Kafka not reachable
    yet) left the producer open: "Unclosed AIOKafkaProducer" in the log at exit."""

    def producers() -> list[AIOKafkaProducer]:
        return [o for o in gc.get_objects() if isinstance(o, AIOKafkaProducer)]

    before = {id(p) for p in producers()}
    nowhere = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    task = asyncio.create_task(Outbox(nowhere, interval_s=60).run())
    await wait_for(
        lambda: any("alerts not published yet" in r.getMessage() for r in caplog.records),
        30, "the producer failed to start",
    )  # fmt: skip
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    made = [p for p in producers() if id(p) not in before]
    assert made, "the outbox made no producer"
    assert [p for p in made if not p._closed] == []
