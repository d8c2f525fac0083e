"""A scripted outage, end to end (issue 23's "done when"): `checkout` starts failing at 30%, then
recovers. Two real replicas store the events and both evaluate the condition; their outboxes
publish to the real alerts topic; a real `tailpipe alerts forward` delivers to a webhook, Slack,
PagerDuty and Opsgenie (local HTTP receivers that check their documented shapes) and email (a
real SMTP server with STARTTLS and AUTH). Every destination gets exactly one "firing" and one
"resolved", no sooner than `for` and `resolve_after` allow. The timeline goes to
.local/alert-outage/timeline.json."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.formats.identity import item_key
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.alerts.test_email import Inbox, Server, serve
from tests.alerts.test_incident_tools import check_pagerduty
from tests.conftest import ROOT, env_of
from tests.support.faults import wait_for
from tests.support.replica import Replica, wait_stored
from tests.support.workers import Process, http_server

pytestmark = pytest.mark.stack

FOR_S, RESOLVE_AFTER_S = 3, 4
RULES = f"""
[outcome]
enabled = false
[error_log]
enabled = false
[new_error]
enabled = false
[regression]
enabled = false
[error_rate]
enabled = false
[slow]
enabled = false

[[condition]]
name = "checkout-errors"
metric = "error_rate"
above = 0.2
window = "1h"
for = "{FOR_S}s"
resolve_after = "{RESOLVE_AFTER_S}s"
min_requests = 20
scripts = ["checkout"]
severity = "critical"
"""
OUT = ROOT / ".local" / "alert-outage"


class Receiver:
    """Every request, by path, with the time it came."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[float, str, dict[str, str], Any]] = []

    def by(self, prefix: str) -> list[tuple[float, str, dict[str, str], Any]]:
        with self.lock:
            return [g for g in self.got if g[1].startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with found.lock:
                found.got.append((time.time(), self.path, headers, orjson.loads(body)))
            self.send_response(202 if self.path.startswith("/pd") else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        yield found, url


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Server]:
    yield from serve(Inbox(), tmp_path, tls=True)


def item(ok: bool, at_ms: int) -> dict[str, Any]:
    return {"scriptName": "checkout", "outcome": "ok" if ok else "exception",
            "eventTimestamp": at_ms, "event": {"request": {"url": "https://shop.test/pay",
                                                           "method": "POST"}},
            "logs": [], "exceptions": [], "wallTime": 12, "cpuTime": 2}  # fmt: skip


async def publish(settings: Settings, items: list[dict[str, Any]]) -> None:
    async with BulkPublisher(settings, settings.topic) as publisher:
        for one in items:
            await publisher.add(item_key(one), orjson.dumps(one))


def destinations(url: str, smtp: Server) -> str:
    return f"""
[[destination]]
name = "webhook"
kind = "webhook"
url = "{url}/hook"
[[destination]]
name = "slack"
kind = "slack"
url = "{url}/slack"
[[destination]]
name = "pagerduty"
kind = "pagerduty"
url = "{url}/pd/v2/enqueue"
routing_key = "R0UT1NGKEY0000000000000000000000"
[[destination]]
name = "opsgenie"
kind = "opsgenie"
url = "{url}/og/v2/alerts"
api_key = "k-123"
[[destination]]
name = "email"
kind = "email"
url = "smtp://127.0.0.1:{smtp.port}"
from = "tailpipe@example.com"
to = ["oncall@example.com"]
username = "tailpipe"
password = "s3cret"
ca_file = "{smtp.ca_file}"
"""


async def test_an_outage_fires_once_and_resolves_once_at_every_destination(
    migrated: Settings,
    db: asyncpg.Connection,
    replicas: list[Replica],
    tmp_path: Path,
    receiver: tuple[Receiver, str],
    smtp: Server,
) -> None:
    got, url = receiver
    rules, targets = tmp_path / "rules.toml", tmp_path / "destinations.toml"
    rules.write_text(RULES)
    targets.write_text(destinations(url, smtp))
    settings = replace(migrated, alerts_topic=f"{migrated.topic}-alerts")
    await clients.ensure_topics(settings, {settings.topic: 2, settings.alerts_topic: 1})
    env = {"TAILPIPE_ALERT_RULES": str(rules), "TAILPIPE_ALERT_EVALUATE_INTERVAL": "0.25",
           "TAILPIPE_ALERTS_TOPIC": settings.alerts_topic}  # fmt: skip
    # Two replicas, each evaluating the condition: one notification per change all the same.
    replicas += [Replica(settings, **env), Replica(settings, **env)]
    forward_env = {**os.environ, **env_of(settings), **env,
                   "TAILPIPE_ALERT_DESTINATIONS": str(targets)}  # fmt: skip
    forward = Process("forward", [sys.executable, "-m", "pipeline", "alerts", "forward"],
                      forward_env, tmp_path)  # fmt: skip
    timeline: dict[str, Any] = {}
    try:
        start = time.time()
        now = int(start * 1000)
        # The outage: 30% of checkout's requests fail.
        await publish(settings, [item(i % 10 >= 3, now + i) for i in range(100)])
        timeline["outage_published"] = time.time() - start
        await wait_stored(db, settings.topic, 100, 60)
        timeline["outage_stored"] = time.time() - start

        def told(state: str) -> bool:
            wanted = [got.by("/hook"), got.by("/slack"), got.by("/pd"), got.by("/og")]
            hooks = all(any(_state(g) == state for g in one) for one in wanted)
            return hooks and sum(1 for m in smtp.inbox.messages
                                 if _subject_state(m["Subject"]) == state) >= 1  # fmt: skip

        await wait_for(lambda: told("firing"), 60, "every destination told firing")
        timeline["firing_everywhere"] = time.time() - start
        fired_at = await db.fetchval(
            "SELECT at FROM alert_changes WHERE notify = 'firing' ORDER BY id LIMIT 1"
        )
        pending_at = await db.fetchval(
            "SELECT at FROM alert_changes WHERE after = 'pending' ORDER BY id LIMIT 1"
        )
        assert (fired_at - pending_at).total_seconds() >= FOR_S
        # The recovery: 900 good requests bring the hour's rate to 3%.
        recovered = time.time()
        await publish(settings, [item(True, now + 1000 + i) for i in range(900)])
        timeline["recovery_published"] = time.time() - start
        await wait_stored(db, settings.topic, 1000, 60)
        await wait_for(lambda: told("resolved"), 60, "every destination told resolved")
        timeline["resolved_everywhere"] = time.time() - start
        resolved_at = await db.fetchval(
            "SELECT at FROM alert_changes WHERE notify = 'resolved' ORDER BY id LIMIT 1"
        )
        resolving_at = await db.fetchval(
            "SELECT at FROM alert_changes WHERE after = 'resolving' ORDER BY id LIMIT 1"
        )
        assert (resolved_at - resolving_at).total_seconds() >= RESOLVE_AFTER_S
        assert resolved_at.timestamp() >= recovered
        # Nothing more comes: every alert in the outbox is published and forwarded.
        await wait_for(_all_published(db), 30, "the outbox published everything")
        counts = {
            "webhook": [_state(g) for g in got.by("/hook")],
            "slack": [_state(g) for g in got.by("/slack")],
            "pagerduty": [g[3]["event_action"] for g in got.by("/pd")],
            "opsgenie": ["close" if g[1].endswith("identifierType=alias") else "create"
                         for g in got.by("/og")],
            "email": [_subject_state(m["Subject"]) for m in smtp.inbox.messages],
        }  # fmt: skip
        assert counts == {
            "webhook": ["firing", "resolved"], "slack": ["firing", "resolved"],
            "pagerduty": ["trigger", "resolve"], "opsgenie": ["create", "close"],
            "email": ["firing", "resolved"],
        }  # fmt: skip
        for g in got.by("/pd"):
            check_pagerduty(g[3])
        changes = await db.fetch("SELECT before, after, at, notify FROM alert_changes ORDER BY id")
        timeline["changes"] = [
            {"before": r["before"], "after": r["after"], "at_s": r["at"].timestamp() - start,
             "notify": r["notify"]} for r in changes
        ]  # fmt: skip
        timeline["received"] = [
            {"at_s": at - start, "path": path.split("?")[0],
             "what": _state((at, path, headers, body))}
            for at, path, headers, body in got.got
        ]  # fmt: skip
        timeline["received"] += [
            {"at_s": at - start, "path": "smtp", "what": _subject_state(m["Subject"])}
            for at, m in zip(smtp.inbox.times, smtp.inbox.messages, strict=True)
        ]
        timeline["for_s"], timeline["resolve_after_s"] = FOR_S, RESOLVE_AFTER_S
    finally:
        forward.stop()
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "timeline.json").write_text(json.dumps(timeline, indent=2, default=str))
    assert [r.terminate() for r in replicas] == [0, 0]


def _state(got: tuple[float, str, dict[str, str], Any]) -> str:
    _, path, _, body = got
    if path.startswith("/pd"):
        return "resolved" if body["event_action"] == "resolve" else "firing"
    if path.startswith("/og"):
        return "resolved" if path.endswith("identifierType=alias") else "firing"
    if path.startswith("/slack"):
        return "resolved" if "RESOLVED" in body["text"] else "firing"
    return str(body["details"].get("state", "firing"))


def _subject_state(subject: str) -> str:
    return "resolved" if "RESOLVED" in subject else "firing"


def _all_published(db: asyncpg.Connection) -> Any:
    async def check() -> bool:
        left = await db.fetchval("SELECT count(*) FROM critical_alerts WHERE published_at IS NULL")
        return int(left) == 0

    return check
