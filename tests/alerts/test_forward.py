"""Forwarding alerts: payloads, signatures, routing, retries, against a real local HTTP server
that records what it receives, and end to end from the real alerts topic, including a
destination that hangs for longer than `max.poll.interval.ms` and then recovers, and a
rebalance during that hang."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.alerts import delivery, destinations, forward
from pipeline.alerts.destinations import SIGNATURE_HEADER, TIMESTAMP_HEADER, Destination
from pipeline.backoff import Backoff
from pipeline.errors import SettingsError
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings
from tests.conftest import free_port
from tests.support.faults import wait_for

ALERT: dict[str, Any] = {
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
    """An HTTP/1.1 server on 127.0.0.1 answering each request with the next scripted status.

    While `hanging`, it reads each request and never answers it (the connection stays open
    until `recover()`): such a request is counted in `hung`, not in `received`, since the
    destination never took it."""

    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    received: list[Received] = field(default_factory=list)
    port: int = 0
    hanging: bool = False
    hung: int = 0
    recovered: asyncio.Event = field(default_factory=asyncio.Event)

    def recover(self) -> None:
        self.hanging = False
        self.recovered.set()

    def ids(self) -> list[str]:
        return [orjson.loads(r.body)["id"] for r in self.received]

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
                if self.hanging:
                    self.hung += 1
                    await self.recovered.wait()  # then hang up without an answer
                    return
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


async def _forwarder(targets: list[Destination]) -> tuple[delivery.Forwarder, httpx.AsyncClient]:
    client = httpx.AsyncClient(timeout=5)
    return delivery.Forwarder(targets, client, max_attempts=3, backoff=Backoff(0.01, 0.02)), client


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
    await clients.ensure_topics(settings, {settings.alerts_topic: 1})
    hook = Destination("w", "webhook", receiver.url(), secret="s3cret")
    slack = Destination("s", "slack", receiver.url("/slack"), severities=frozenset({"warning"}))
    async with BulkPublisher(settings, settings.alerts_topic) as publisher:
        await publisher.add(b"k", b"not json")
        await publisher.add(ALERT["dedup_key"].encode(), orjson.dumps(ALERT))
    stop = asyncio.Event()
    running = asyncio.create_task(forward.run(settings, [hook, slack], stop))
    await wait_for(lambda: len(receiver.received) >= 1, 60, "the webhook received the alert")
    group = f"{settings.group}-forward"
    consumer = AIOKafkaConsumer(**clients.client_options(settings), group_id=group)
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
    committed: int | None = await consumer.committed(tp)
    return committed == offset


def test_rate_limit_spaces_requests_evenly() -> None:
    limit = delivery.RateLimit(per_minute=30)  # one every 2 s
    assert limit.reserve(100.0) == 0.0
    assert limit.reserve(100.0) == 2.0
    assert limit.reserve(100.5) == 3.5
    assert limit.reserve(110.0) == 0.0  # idle long enough: no wait, no burst credit either
    assert limit.reserve(110.0) == 2.0


def _alert(n: int) -> dict[str, Any]:
    return {**ALERT, "id": f"5f0c7d0e-0000-5000-8000-{n:012d}", "dedup_key": f"outcome:s{n}:x"}


async def _publish(settings: Settings, alerts: list[dict[str, Any]]) -> None:
    async with BulkPublisher(settings, settings.alerts_topic) as publisher:
        for alert in alerts:
            await publisher.add(alert["dedup_key"].encode(), orjson.dumps(alert))


async def _all_committed(settings: Settings, group: str) -> bool:
    """Whether the group's committed offsets reached the end of every alerts partition."""
    ends = await clients.end_offsets(settings, settings.alerts_topic)
    consumer = AIOKafkaConsumer(**clients.client_options(settings), group_id=group)
    await consumer.start()
    try:
        for partition, end in ends.items():
            if await consumer.committed(TopicPartition(settings.alerts_topic, partition)) != end:
                return False
        return True
    finally:
        await consumer.stop()


class GroupWatch:
    """Samples a consumer group's state and members (DescribeGroups) every 200 ms, from the
    broker's side: a member that leaves, or a rebalance, shows up here."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self.samples: list[tuple[str, tuple[str, ...]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GroupWatch:
        self._admin = AIOKafkaAdminClient(**clients.client_options(self.settings))
        await self._admin.start()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._admin.close()

    async def _sample(self) -> None:
        while True:
            [response] = await self._admin.describe_consumer_groups([self.group])
            _, _, state, _, _, members, *_ = response.groups[0]
            self.samples.append((state, tuple(m[0] for m in members)))
            await asyncio.sleep(0.2)  # a sampling period, not a wait for a condition

    def since_stable(self) -> list[tuple[str, tuple[str, ...]]]:
        """The samples from the first time the group was Stable."""
        first = next((i for i, (state, _) in enumerate(self.samples) if state == "Stable"), None)
        return [] if first is None else self.samples[first:]


MAX_POLL_MS = 2000
"""`max.poll.interval.ms` of the hang tests: the hang lasts three times as long."""


def _hanging(settings: Settings, receiver: Receiver, stop: asyncio.Event) -> Any:
    """`alerts forward` to the receiver, with `max.poll.interval.ms` of MAX_POLL_MS, an HTTP
    timeout of 1 s, and attempts enough to outlast the hang."""
    settings = replace(settings, alert_forward_attempts=1000, shutdown_grace=5.0)
    hook = Destination("w", "webhook", receiver.url(), per_minute=60_000)
    return asyncio.create_task(
        forward.run(settings, [hook], stop, max_poll_interval_ms=MAX_POLL_MS,
                    backoff=Backoff(0.05, 0.5), http_timeout_s=1.0)
    )  # fmt: skip


async def test_a_destination_that_hangs_longer_than_max_poll_interval_then_recovers(
    settings: Settings, receiver: Receiver
) -> None:
    """Issue 17 item 7. Before: alerts were delivered one after another inside the poll loop,
    so a hang longer than max.poll.interval.ms made the consumer leave its group (LeaveGroup;
    the group went Empty), and with another member present the commit after the delivery
    raised CommitFailedError out of `alerts forward`."""
    await clients.ensure_topics(settings, {settings.alerts_topic: 2})
    alerts = [_alert(n) for n in range(40)]
    await _publish(settings, alerts[:25])
    receiver.hanging = True
    stop = asyncio.Event()
    group = f"{settings.group}-forward"
    watch = GroupWatch(settings, group)
    running = _hanging(settings, receiver, stop)
    try:
        async with watch:
            await wait_for(lambda: receiver.hung >= 1, 60, "the destination got a first request")
            hang_started = time.monotonic()
            await _publish(settings, alerts[25:])  # read during the hang
            await wait_for(
                lambda: (
                    time.monotonic() - hang_started > 3 * MAX_POLL_MS / 1000 and receiver.hung >= 3
                ),
                60,
                "a hang three times max.poll.interval.ms long, with retries",
            )
            assert not running.done(), running
            assert receiver.received == []
            receiver.recover()
            everything = {a["id"] for a in alerts}
            await wait_for(lambda: set(receiver.ids()) == everything, 60, "every alert delivered")
            await wait_for(lambda: _all_committed(settings, group), 30, "every offset committed")
    finally:
        receiver.recover()  # also when the test failed: let the forwarder finish and stop
        stop.set()
        tally = await asyncio.wait_for(running, 60)
    repeated = [i for i, n in Counter(receiver.ids()).items() if n > 1]
    assert repeated == []
    assert len(receiver.received) == 40
    assert (tally.delivered, tally.dropped, tally.repeats) == (40, 0, 0)
    # From the broker's side: Stable all along, hang included, with one member, the same one.
    watched = watch.since_stable()
    assert len(watched) >= 10, watch.samples
    assert {state for state, _ in watched} == {"Stable"}, watched
    assert {members for _, members in watched} == {watched[0][1]}, watched
    assert len(watched[0][1]) == 1
    assert tally.assignments == 1, "the forwarder left its group and joined again"
    assert tally.commit_failures == 0


async def test_a_rebalance_during_a_hang_delivers_each_alert_once(
    settings: Settings, receiver: Receiver
) -> None:
    """While a destination hangs, a second member joins the group (taking a partition: the
    forwarder's deliveries of it that had not started are withdrawn, the one under way goes
    on), then leaves (the partition comes back and is read again from its committed offset).
    After recovery every alert arrives once: what was read again joined the delivery under way
    or was delivered for the first time."""
    await clients.ensure_topics(settings, {settings.alerts_topic: 2})
    alerts = [_alert(n) for n in range(30)]
    await _publish(settings, alerts)
    receiver.hanging = True
    stop = asyncio.Event()
    running = _hanging(settings, receiver, stop)
    group = f"{settings.group}-forward"
    try:
        await wait_for(lambda: receiver.hung >= 1, 60, "the destination got a first request")
        visitor = AIOKafkaConsumer(**clients.client_options(settings), group_id=group,
                                   enable_auto_commit=False)  # fmt: skip
        visitor.subscribe([settings.alerts_topic])
        await visitor.start()
        try:
            await wait_for(lambda: bool(visitor.assignment()), 60, "the visitor got a partition")
            assert len(visitor.assignment()) == 1
        finally:
            await visitor.stop()  # leaves the group: the forwarder gets both partitions back
        hung_before = receiver.hung
        await wait_for(lambda: receiver.hung > hung_before, 60, "the hang goes on after it")
        receiver.recover()
        everything = {a["id"] for a in alerts}
        await wait_for(lambda: set(receiver.ids()) == everything, 60, "every alert delivered")
        await wait_for(lambda: _all_committed(settings, group), 30, "every offset committed")
    finally:
        receiver.recover()  # also when the test failed: let the forwarder finish and stop
        stop.set()
        tally = await asyncio.wait_for(running, 60)
    repeated = [i for i, n in Counter(receiver.ids()).items() if n > 1]
    assert repeated == []
    assert len(receiver.received) == 30
    assert (tally.delivered, tally.dropped) == (30, 0)
    assert tally.assignments >= 3, "assigned, then again with the visitor, then without it"


async def test_a_refused_commit_is_counted_and_retried_not_raised(
    settings: Settings, receiver: Receiver
) -> None:
    """A commit Kafka refuses (here: a consumer with no assignment, IllegalStateError; after a
    rebalance: CommitFailedError) is logged and counted; the forwarder carries on."""
    consumer = AIOKafkaConsumer(**clients.client_options(settings), group_id=settings.group)
    await consumer.start()
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            hook = Destination("w", "webhook", receiver.url())
            forwarding = forward.Forwarding(consumer, delivery.Forwarder([hook], client))
            tp = TopicPartition(settings.alerts_topic, 0)
            forwarding.assigned({tp})
            forwarding.partitions[tp].finished = 5
            await forwarding.commit()
            assert forwarding.tally.commit_failures == 1
            assert forwarding.partitions[tp].committed is None  # still due: tried again later
    finally:
        await consumer.stop()


async def test_a_lane_posts_each_alert_id_once(receiver: Receiver) -> None:
    """Handed the same alert while it is being delivered, and again after, a lane POSTs it
    once; a withdrawn delivery that had not started is never made."""
    async with httpx.AsyncClient(timeout=5) as client:
        hook = Destination("w", "webhook", receiver.url(), per_minute=60_000)
        forwarder = delivery.Forwarder([hook], client)
        lane = delivery.Lane(hook, forwarder, memory=2)
        running = asyncio.create_task(lane.run())
        try:
            first = lane.submit("a", _alert(1))
            again = lane.submit("a", _alert(1))
            assert first is not None
            assert again is first
            queued = lane.submit("b", _alert(2))
            assert queued is not None
            lane.withdraw("b")
            await asyncio.wait_for(first, 10)
            assert queued.cancelled()
            assert lane.submit("a", _alert(1)) is None  # finished: remembered
            for n in (3, 4):  # memory of 2: "a" is forgotten after two more
                future = lane.submit(f"k{n}", _alert(n))
                assert future is not None
                await asyncio.wait_for(future, 10)
            assert not lane.knows("a")
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert receiver.ids() == [_alert(n)["id"] for n in (1, 3, 4)]


async def test_reading_pauses_while_too_many_alerts_are_unfinished(
    settings: Settings, receiver: Receiver
) -> None:
    """Memory stays bounded under a dead destination: past `max_pending` alerts read and not
    finished, the partitions are paused (and polled: the group sees a live member); once the
    destination is back, reading resumes and everything is delivered once."""
    await clients.ensure_topics(settings, {settings.alerts_topic: 1})
    alerts = [_alert(n) for n in range(50)]
    await _publish(settings, alerts[:30])
    receiver.hanging = True
    consumer = AIOKafkaConsumer(
        **clients.client_options(settings), group_id=f"{settings.group}-forward",
        enable_auto_commit=False, auto_offset_reset="earliest",
        max_poll_interval_ms=MAX_POLL_MS,
    )  # fmt: skip
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=1.0) as client:
        hook = Destination("w", "webhook", receiver.url(), per_minute=60_000)
        forwarder = delivery.Forwarder([hook], client, 1000, Backoff(0.05, 0.5))
        forwarding = forward.Forwarding(consumer, forwarder, max_pending=10)
        consumer.subscribe([settings.alerts_topic], listener=forwarding.listener())
        await consumer.start()
        running = asyncio.create_task(forwarding.run(stop, 5.0))
        try:
            await wait_for(lambda: forwarding.paused, 60, "reading paused")
            assert consumer.paused() == consumer.assignment()
            held = forwarding.uncommitted()
            assert held >= 10
            await _publish(settings, alerts[30:])
            hung = receiver.hung
            await wait_for(lambda: receiver.hung >= hung + 3, 60, "three more hung attempts")
            assert forwarding.uncommitted() == held  # nothing more read meanwhile
            receiver.recover()
            everything = {a["id"] for a in alerts}
            await wait_for(lambda: set(receiver.ids()) == everything, 60, "every alert delivered")
            await wait_for(lambda: not forwarding.paused, 30, "reading resumed")
        finally:
            receiver.recover()
            stop.set()
            await asyncio.wait_for(running, 60)
            await consumer.stop()
    assert sorted(receiver.ids()) == sorted(everything)
    assert forwarder.tally.assignments == 1
