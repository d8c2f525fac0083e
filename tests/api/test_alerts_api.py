"""Alert states, history, acknowledgements and silences through the API, over the real
PostgreSQL the real evaluator wrote to: a silenced rule changes state and notifies no one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from fastapi.testclient import TestClient

from pipeline.alerts.conditions import Condition
from pipeline.alerts.evaluator import evaluate
from pipeline.alerts.state import Timing
from pipeline.api.app import create_app
from pipeline.settings import Settings
from tests.alerts.test_evaluator import MINUTE, rollup

READ, WRITE = "alerts-read-0123456789abcdef", "alerts-write-0123456789abcdef"
ERRORS = Condition("checkout-errors", "error_rate", 0.2, True, 1, Timing(), 20)


@pytest.fixture
def app_settings(migrated: Settings) -> Settings:
    return replace(migrated, api_read_tokens=(READ,), api_write_tokens=(WRITE,))


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as c:
        yield c


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_states_history_ack_and_silence(client: TestClient, db: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    base = int(now.timestamp() * 1000) - 30 * MINUTE
    base -= base % MINUTE
    await rollup(db, base, "checkout", 100, 40)
    await evaluate(db, (ERRORS,), base)  # firing
    body = client.get("/api/alerts/states", headers=as_(READ)).json()
    assert [(s["rule"], s["group_key"], s["status"]) for s in body["states"]] == [
        ("checkout-errors", "checkout", "firing")
    ]
    assert [(c["before"], c["after"], c["notify"]) for c in body["changes"]] == [
        ("pending", "firing", "firing"), ("normal", "pending", None),
    ]  # fmt: skip
    alert = await db.fetchval("SELECT id::text FROM critical_alerts")
    # Reading tokens may not write.
    assert client.post(f"/api/alerts/{alert}/ack", json={}, headers=as_(READ)).status_code == 403
    acked = client.post(f"/api/alerts/{alert}/ack", json={"by": "ana"}, headers=as_(WRITE))
    assert acked.status_code == 200
    assert acked.json()["acked_by"] == "ana"
    again = client.post(f"/api/alerts/{alert}/ack", json={"by": "bo"}, headers=as_(WRITE))
    assert again.json()["acked_by"] == "ana"  # the first is kept
    missing = "00000000-0000-5000-8000-000000000000"
    assert client.post(f"/api/alerts/{missing}/ack", json={}, headers=as_(WRITE)).status_code == 404

    # Silenced: the recovery changes its state, and notifies no one.
    until = (now + timedelta(hours=1)).isoformat()
    silence = {"rule": "checkout-errors", "group": "checkout", "until": until,
               "comment": "deploying"}  # fmt: skip
    made = client.post("/api/alerts/silences", headers=as_(WRITE), json=silence)
    assert made.status_code == 201, made.text
    await rollup(db, base, "checkout", 1000, 40)
    assert await evaluate(db, (ERRORS,), base + MINUTE) == {}
    body = client.get("/api/alerts/states", headers=as_(READ)).json()
    assert body["states"][0]["status"] == "normal"
    assert [(c["after"], c["notify"], c["silenced"]) for c in body["changes"][:2]] == [
        ("normal", "resolved", True), ("resolving", None, True),
    ]  # fmt: skip
    assert [s["comment"] for s in body["silences"]] == ["deploying"]
    assert await db.fetchval("SELECT count(*) FROM critical_alerts") == 1
    # Ended: it notifies again.
    number = made.json()["id"]
    ended = client.delete(f"/api/alerts/silences/{number}", headers=as_(WRITE))
    assert ended.status_code == 204
    assert client.delete(f"/api/alerts/silences/{number}", headers=as_(WRITE)).status_code == 404
    await rollup(db, base, "checkout", 1000, 400)
    assert await evaluate(db, (ERRORS,), base + 2 * MINUTE) == {"firing": 1}


def test_a_silence_must_end_within_90_days(client: TestClient) -> None:
    later = (datetime.now(UTC) + timedelta(days=91)).isoformat()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for until in (later, past):
        answer = client.post("/api/alerts/silences", headers=as_(WRITE),
                             json={"rule": "x", "until": until})  # fmt: skip
        assert answer.status_code == 422
