"""Forwarding alerts: payloads, signatures, routing, retries, against a real local HTTP server
that records what it receives, and end to end from the real alerts topic."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import kafka
from pipeline.alerts import destinations, forward
from pipeline.alerts.destinations import SIGNATURE_HEADER, TIMESTAMP_HEADER, Destination
from pipeline.errors import SettingsError
from pipeline.outage import Backoff
from pipeline.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.conftest import free_port
from tests.faults import wait_for

ALERT = {
    "id": "5f0c7d0e-0000-5000-8000-000000000001", "rule": "outcome", "severity": "critical",
    "script": "api-gateway", "dedup_key": "outcome:api-gateway:exception",
    "first_at": "2026-11-29T06:00:00+00:00", "last_at": "2026-11-29T06:01:00+00:00",
    "occurrences": 3, "summary": "api-gateway: an invocation ended with exception",
    "details": {"query": "/api/logs/recent?script=api-gateway&outcome=exception"},
}  # fmt: skip


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 answering each request with the next scripted status."""

    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    received: list[Received] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(path, headers, body))
                status = self.statuses.pop(0) if self.statuses else 200
                extra = f"Retry-After: {self.retry_after}\r\n" if self.retry_after else ""
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{extra}\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    async with server:
        yield r


def test_payloads_for_slack_and_discord_carry_the_summary() -> None:
    slack = Destination("s", "slack", "https://hooks.slack.test/x")
    body, _ = slack.request(ALERT, 1)
    text = orjson.loads(body)["text"]
    assert "CRITICAL outcome [api-gateway]" in text
    assert "(x3)" in text
    assert ALERT["details"]["query"] in text
    discord = Destination("d", "discord", "https://discord.test/api/webhooks/x")
    assert "CRITICAL" in orjson.loads(discord.request(ALERT, 1)[0])["content"]


def test_a_webhook_body_is_the_alert_signed_with_a_timestamp() -> None:
    hook = Destination("w", "webhook", "https://example.test/hook", secret="s3cret")
    body, headers = hook.request(ALERT, 1_764_400_000)
    assert orjson.loads(body) == ALERT
    assert headers[TIMESTAMP_HEADER] == "1764400000"
    expected = hmac.new(b"s3cret", b"1764400000." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"


def test_routing_by_severity_and_script() -> None:
    only_critical = Destination("c", "slack", "https://x.test", severities=frozenset({"critical"}))
    assert only_critical.wants(ALERT)
    assert not only_critical.wants({**ALERT, "severity": "warning"})
    apis = Destination("a", "slack", "https://x.test", scripts=("api-*",))
    assert apis.wants(ALERT)
    assert not apis.wants({**ALERT, "script": "billing"})
    assert not apis.wants({**ALERT, "script": None})


def test_a_bad_destinations_file_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[[destination]]\nname = "x"\nkind = "pager"\nurl = "https://x.test"\n')
    with pytest.raises(SettingsError, match="kind"):
        destinations.load(str(path))
    path.write_text("")
    with pytest.raises(SettingsError, match="destination"):
        destinations.load(str(path))


async def _forwarder(targets: list[Destination]) -> tuple[forward.Forwarder, httpx.AsyncClient]:
    client = httpx.AsyncClient(timeout=5)
    return forward.Forwarder(targets, client, max_attempts=3, backoff=Backoff(0.01, 0.02)), client


async def test_retries_on_5xx_and_429_but_not_on_other_4xx(receiver: Receiver) -> None:
    hook = Destination("w", "webhook", receiver.url())
    forwarder, client = await _forwarder([hook])
    async with client:
        receiver.statuses = [503, 429, 200]
        receiver.retry_after = "0"
        await forwarder.forward(ALERT)
        assert len(receiver.received) == 3
        assert (forwarder.tally.delivered, forwarder.tally.retries) == (1, 2)
        receiver.statuses = [400]
        await forwarder.forward(ALERT)
        assert len(receiver.received) == 4  # no retry
        assert forwarder.tally.dropped == 1
        receiver.statuses = [500, 500, 500]
        await forwarder.forward(ALERT)
        assert len(receiver.received) == 7  # given up after max_attempts
        assert forwarder.tally.dropped == 2


async def test_an_unreachable_destination_is_retried_then_given_up() -> None:
    hook = Destination("w", "webhook", f"http://127.0.0.1:{free_port()}/hook")
    forwarder, client = await _forwarder([hook])
    async with client:
        await forwarder.forward(ALERT)
    assert (forwarder.tally.retries, forwarder.tally.dropped) == (2, 1)


async def test_from_the_alerts_topic_to_a_webhook_then_committed(
    settings: Settings, receiver: Receiver
) -> None:
    await kafka.ensure_topics(settings, {settings.alerts_topic: 1})
    hook = Destination("w", "webhook", receiver.url(), secret="s3cret")
    slack = Destination("s", "slack", receiver.url("/slack"), severities=frozenset({"warning"}))
    async with BulkPublisher(settings, settings.alerts_topic) as publisher:
        await publisher.add(b"k", b"not json")
        await publisher.add(ALERT["dedup_key"].encode(), orjson.dumps(ALERT))
    stop = asyncio.Event()
    running = asyncio.create_task(forward.run(settings, [hook, slack], stop))
    await wait_for(lambda: len(receiver.received) >= 1, 60, "the webhook received the alert")
    group = f"{settings.group}-forward"
    consumer = AIOKafkaConsumer(**kafka.client_options(settings), group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(settings.alerts_topic, 0)
        await wait_for(lambda: _committed(consumer, tp, 2), 30, "offsets committed after delivery")
    finally:
        await consumer.stop()
    stop.set()
    tally = await running
    [request] = receiver.received  # the warning-only Slack destination got nothing
    assert request.path == "/hook"
    assert orjson.loads(request.body)["id"] == ALERT["id"]
    signed = hmac.new(
        b"s3cret", request.headers[TIMESTAMP_HEADER.lower()].encode() + b"." + request.body,
        hashlib.sha256,
    ).hexdigest()  # fmt: skip
    assert request.headers[SIGNATURE_HEADER.lower()] == f"sha256={signed}"
    assert tally.delivered == 1


async def _committed(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    return await consumer.committed(tp) == offset


def test_rate_limit_spaces_requests_evenly() -> None:
    limit = forward.RateLimit(per_minute=30)  # one every 2 s
    assert limit.reserve(100.0) == 0.0
    assert limit.reserve(100.0) == 2.0
    assert limit.reserve(100.5) == 3.5
    assert limit.reserve(110.0) == 0.0  # idle long enough: no wait, no burst credit either
    assert limit.reserve(110.0) == 2.0
