"""`make chaos`: the failure scenarios of the test suite, longer, at random, then an accounting.

Several `tailpipe run` replicas consume a topic that two producers keep filling, while faults
are injected at random times: kill -9 and SIGTERM of a replica, PostgreSQL stopped, the S3
endpoint stopped, a replica killed while its dead-letter write is unanswered, and Kafka
stopped and started again.

- A producer writing to Kafka itself, with undecodable messages, unstorable ones, and ones a
  CHECK constraint makes PostgreSQL refuse. It holds off while Kafka is down.
- A sender posting trace items to a real `tailpipe collect`, as a Tail Worker does, which
  behaves as senders do: it retries a request until it is accepted (the collector answers
  503 while Kafka is down, and a request may have reached Kafka in part), it gives up waiting
  for some answers and sends again (the answer lost), and it sends 10% of its requests again
  after they were accepted. Every copy after the first is re-serialised, its items in
  another order. Deduplication must store each item once.
- A streaming sender posting a streaming Tail Worker's events to the collector's
  `/v1/tail-stream`, as its forwarder does (tests/support/stream_traffic.py): each invocation's
  events spread over several requests mixing invocations, some out of order, some open for
  several seconds (across flushes and kills), retried like the other sender's, and 10% of its
  requests sent again after they were accepted, re-batched. Each invocation must be one row,
  its lines stored once each, and nothing left open.

At the end every fault is repaired, the replicas drain the topic, and the run is accounted
for: every message in the topic is stored or dead-lettered, each invocation is stored once, the
hourly rollups equal a recomputation from the raw rows, no dead letter is stored twice, and no
object is unknown to the index; every streamed invocation whose events were all accepted is one
row saying what its events said, its lines are stored once each, and none is left open.

    python -m tests.chaos [--duration 120] [--replicas 2] [--rate 2000] [--stream-rate 300]
                          [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.deadletters.record import partition_prefix
from pipeline.deadletters.store import open_store
from pipeline.formats.decode import decode
from pipeline.kafka import clients, synth
from pipeline.postgres.connect import connect
from pipeline.settings import Settings, load
from tests.conftest import ROOT, env_of, tailpipe, unique
from tests.support import stream_traffic
from tests.support.faults import (
    TcpProxy,
    kafka_down,
    kafka_up,
    leaders_elected,
    postgres_down,
    postgres_up,
)
from tests.support.replica import (
    REFUSING_CHECK,
    START,
    Produced,
    Replica,
    assert_rollups_match_raw_rows,
    dead_letters_in_store,
    produce,
    refused_by_check,
    stored_messages,
    stored_total,
)
from tests.support.workers import collector

FAULTS = ("kill9", "sigterm", "postgres", "s3", "s3_hold_kill9", "kafka")
PARTITIONS = 6
TOKEN = "chaos-sender-token-0123456789"
ITEMS_PER_REQUEST = 20


class Run:
    def __init__(
        self,
        settings: Settings,
        proxy: TcpProxy,
        rng: random.Random,
        streamed: stream_traffic.StreamSent,
    ) -> None:
        self.kafka = asyncio.Lock()
        """Held by the direct producer while it publishes, and by the Kafka fault while the
        broker is down: a producer writing to Kafka itself is not the subject here."""
        self.settings = settings
        self.proxy = proxy
        self.rng = rng
        self.replicas: list[Replica] = []
        self.retired: list[Replica] = []
        self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.streamed = streamed
        """Which streamed invocations a kill -9 finds open."""

    def start(self) -> None:
        env = {"TAILPIPE_S3_ENDPOINT": f"http://127.0.0.1:{self.proxy.port}"}
        self.replicas.append(Replica(self.settings, **env))

    def pick(self) -> Replica:
        return self.replicas.pop(self.rng.randrange(len(self.replicas)))

    async def fault(self) -> None:
        kind = self.rng.choice(FAULTS)
        self.faults[kind] += 1
        pause = self.rng.uniform(3, 15)
        print(f"  {time.strftime('%H:%M:%S')} fault: {kind}", flush=True)
        if kind == "kill9":
            victim = self.pick()
            self.streamed.note_kill()
            victim.kill()
            self.retired.append(victim)
            self.start()
        elif kind == "sigterm":
            victim = self.pick()
            code = await asyncio.to_thread(victim.terminate, 120)
            self.retired.append(victim)
            if code != 0:
                raise SystemExit(f"a replica stopped by SIGTERM exited {code}")
            self.start()
        elif kind == "postgres":
            await asyncio.to_thread(postgres_down)
            await asyncio.sleep(pause)
            await asyncio.to_thread(postgres_up)
        elif kind == "kafka":
            async with self.kafka:
                await asyncio.to_thread(kafka_down)
                await asyncio.sleep(pause)
                await asyncio.to_thread(kafka_up)
                await leaders_elected(self.settings, self.settings.topic, PARTITIONS)
        elif kind == "s3":
            await self.proxy.refuse()
            await asyncio.sleep(pause)
            await self.proxy.restore()
        else:
            self.proxy.hold()
            await asyncio.sleep(self.rng.uniform(1, 4))
            victim = self.pick()
            self.streamed.note_kill()
            victim.kill()
            self.retired.append(victim)
            self.proxy.release()
            self.start()


async def feed(
    settings: Settings, rate: float, stop: asyncio.Event, seed: int, kafka: asyncio.Lock
) -> Produced:
    """Publish chunks of synthetic messages at about `rate` per second until `stop`."""
    total = Produced(0, 0, 0, 0, Counter(), 0)
    chunk = max(100, int(rate))
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        async with kafka:
            got = await produce(settings, chunk, seed * 100_000 + n, 0.01, 0.01, refusing=True)
        n += 1
        total = total + got
        await asyncio.sleep(max(0.0, chunk / rate - (time.monotonic() - started)))
    return total


@dataclass
class Sent:
    """What the sender got stored: each item once, however often it was sent."""

    items: int = 0
    requests: int = 0
    again_after_acceptance: int = 0
    retried: int = 0
    """Requests sent again unaccepted: a 503, or an answer it gave up waiting for."""


async def send(url: str, rate: float, stop: asyncio.Event, seed: int, sent: Sent) -> None:
    """Post trace items to the collector at about `rate` per second until `stop`, as a sender
    that retries does. Items are synthetic, minus those PostgreSQL refuses (the direct producer
    covers those), so each item makes exactly one invocation."""
    rng = random.Random(seed)
    stream = (
        m for m in synth.messages(seed, START + 3_600_000, step_ms=3)
        if not refused_by_check(decode(m.value))
    )  # fmt: skip
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            items = [orjson.loads(m.value) for m in itertools.islice(stream, ITEMS_PER_REQUEST)]
            copies = 2 if rng.random() < 0.1 else 1
            for copy in range(copies):
                body = items if copy == 0 else _again(items, rng)
                await _until_accepted(client, url, headers, body, rng, sent)
            sent.items += len(items)
            sent.again_after_acceptance += copies - 1
            await asyncio.sleep(max(0.0, len(items) / rate - (time.monotonic() - started)))


def _again(items: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """The same items re-serialised: another order, and another key order in each."""
    again = [dict(reversed(list(item.items()))) for item in items]
    rng.shuffle(again)
    return again


async def _until_accepted(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    items: list[dict[str, Any]],
    rng: random.Random,
    sent: Sent,
) -> None:
    backoff = 0.2
    while True:
        sent.requests += 1
        # Now and then the sender stops waiting before the answer: it cannot know whether the
        # items reached Kafka, so it sends them again.
        timeout = 0.005 if rng.random() < 0.03 else 30.0
        try:
            answer = await client.post(url, content=orjson.dumps(items), headers=headers,
                                       timeout=timeout)  # fmt: skip
            if answer.is_success:  # 202: published, acknowledged by Kafka
                return
            if answer.status_code not in (429, 503):
                raise SystemExit(f"the collector answered {answer.status_code}: {answer.text}")
        except httpx.TransportError:
            pass
        sent.retried += 1
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)


async def topic_end(settings: Settings) -> int:
    """How many messages the topic holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(**clients.client_options(settings), group_id=None)
    await consumer.start()
    try:
        wanted = [TopicPartition(settings.topic, n) for n in range(PARTITIONS)]
        return sum((await consumer.end_offsets(wanted)).values())
    finally:
        await consumer.stop()


async def keys_in_topic(settings: Settings, n: int) -> dict[tuple[int, int], bytes | None]:
    """The key of each of the topic's n messages, by (partition, offset)."""
    consumer = AIOKafkaConsumer(
        **clients.client_options(settings), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    keys: dict[tuple[int, int], bytes | None] = {}
    try:
        consumer.assign([TopicPartition(settings.topic, p) for p in range(PARTITIONS)])
        async with asyncio.timeout(300):
            while len(keys) < n:
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    keys.update({(tp.partition, r.offset): r.key for r in records})
    finally:
        await consumer.stop()
    return keys


async def account(
    settings: Settings,
    produced: Produced,
    sent: Sent,
    streamed: stream_traffic.StreamSent,
    in_topic: int,
) -> tuple[dict[str, Any], list[str]]:
    # The topic's messages first: the streamed ones are accounted for by their invocations.
    keys = await keys_in_topic(settings, in_topic)
    stream_keys = {i.encode() for i in streamed.invocations}
    conn = await connect(settings)
    try:
        try:
            await assert_rollups_match_raw_rows(conn)
            rollups = "equal"
        except AssertionError as unequal:
            rollups = f"NOT equal: {unequal}"
        stored = await stored_messages(conn)
        dead = await dead_letters_in_store(settings, conn)
        events = await conn.fetchval("SELECT count(*) FROM tail_events WHERE source <> 'stream'")
        indexed = {r[0] for r in await conn.fetch("SELECT object_key FROM dead_letters")}
        partitions = [r[0] for r in await conn.fetch(
            "SELECT partition FROM pipeline_offsets WHERE topic = $1", settings.topic)]  # fmt: skip
        offsets = await stored_total(conn, settings.topic)
        streaming = {m for m, key in keys.items() if key in stream_keys}
        stream_report, problems = await stream_traffic.account(
            conn, streamed, len(streaming), len(streaming & dead.keys())
        )
    finally:
        await conn.close()
    # A message with no rows and no dead letter is a duplicate when a message with its key
    # (its item's identity) has rows: a copy deduplication left out. Else it is missing. A
    # streamed invocation's messages (keyed by its id) make one row between them: they are
    # accounted for by its invocation, above.
    stored_keys = {keys[m] for m in stored if keys.get(m) is not None}
    unaccounted = set(keys) - stored - dead.keys() - streaming
    copies = {m for m in unaccounted if keys[m] is not None and keys[m] in stored_keys}
    in_store: set[str] = set()
    async with open_store(settings) as store:
        for p in partitions:
            prefix = partition_prefix(store.prefix, settings.topic, p)
            in_store |= set(await store.keys_after(prefix, None))
    report = {
        "produced (direct)": produced.count,
        "items sent (collector)": sent.items,
        "requests sent": sent.requests,
        "sent again after acceptance": sent.again_after_acceptance,
        "sent again unanswered or refused": sent.retried,
        "messages in the topic": in_topic,
        "stored offsets": offsets,
        "stored messages": len(stored),
        "dead-lettered": len(dead),
        "expected dead (poison + unstorable + refused)": produced.dead,
        "left out as copies of stored items": len(copies),
        "missing": len(unaccounted - copies),
        "invocations stored (not streamed)": events,
        "duplicate invocations": events - produced.invocations - sent.items,
        "rollups against the raw rows": rollups,
        "stored and dead-lettered": len(stored & dead.keys()),
        "dead letters twice": sum(1 for n in dead.values() if n > 1),
        "objects not indexed": len(in_store - indexed),
        **stream_report,
    }
    return report, problems


async def main(duration: float, replicas: int, rate: float, stream_rate: float, seed: int) -> int:
    base = load()
    schema = unique("chaos")
    settings = replace(
        base, postgres_schema=schema, topic=unique("chaos"), group=unique("chaos"),
        dlq_url=f"s3://{base.dlq_bucket}/{schema}",
    )  # fmt: skip
    conn = await connect(base)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    migrated = tailpipe("migrate", env=env_of(settings))
    if migrated.returncode != 0:
        raise SystemExit(migrated.stderr)
    conn = await connect(settings)
    await conn.execute(REFUSING_CHECK)  # some messages PostgreSQL refuses: bisection under fire
    await conn.close()
    await clients.ensure_topics(settings, {settings.topic: PARTITIONS})
    endpoint = urlsplit(settings.s3_endpoint)
    rng = random.Random(seed)
    async with TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80) as proxy:
        streamed = stream_traffic.StreamSent()
        run = Run(settings, proxy, rng, streamed)
        for _ in range(replicas):
            run.start()
        stop = asyncio.Event()
        feeding = asyncio.create_task(feed(settings, rate, stop, seed, run.kafka))
        sent = Sent()
        logs = ROOT / ".local" / "chaos" / settings.topic
        logs.mkdir(parents=True, exist_ok=True)
        with collector(env_of(settings), TOKEN, logs) as url:
            sending = asyncio.create_task(send(url, rate / 4, stop, seed + 1, sent))
            stream_url = url.removesuffix("/v1/tail") + "/v1/tail-stream"
            streaming = asyncio.create_task(
                stream_traffic.send(stream_url, TOKEN, stream_rate, stop, seed + 2, streamed)
            )
            await _faults(run, rng, duration, replicas, rate, seed)
            stop.set()
            produced = await feeding
            await sending
            await streaming
        in_topic = await topic_end(settings)
        print(f"  repaired; draining {in_topic} messages", flush=True)
        conn = await connect(settings)
        try:
            async with asyncio.timeout(600):
                # The replicas make the progress; PostgreSQL is where it shows.
                while await stored_total(conn, settings.topic) < in_topic:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)
        finally:
            await conn.close()
        for replica in run.replicas:
            replica.terminate()
    report, problems = await account(settings, produced, sent, streamed, in_topic)
    report["faults"] = run.faults
    ok = (
        report["stored offsets"] == report["messages in the topic"]
        and report["missing"] == 0
        and report["rollups against the raw rows"] == "equal"
        and report["dead-lettered"] == report["expected dead (poison + unstorable + refused)"]
        and report["duplicate invocations"] == 0
        and report["stored and dead-lettered"] == 0
        and report["dead letters twice"] == 0
        and report["objects not indexed"] == 0
        and stream_traffic.passed(report)
    )
    print(f"\n{'chaos accounting':40} {'count':>10}")
    for name, value in report.items():
        if name != "faults":
            print(f"{name:44} {value:>10,}" if isinstance(value, int) else f"{name:44} {value}")
    print(f"{'faults injected':40} {sum(run.faults.values()):>10}  "
          + ", ".join(f"{k} {v}" for k, v in run.faults.items()))  # fmt: skip
    for problem in problems:
        print(f"  {problem}")
    print("\nOK: produced = stored + dead-lettered, nothing twice" if ok else "\nFAILED")
    saved = save({**report, "stream problems": problems, "ok": ok, "seed": seed})
    print(f"JSON: {saved.relative_to(ROOT)}")
    if ok:  # a failed run's schema stays, to look into
        conn = await connect(base)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
    return 0 if ok else 1


async def _faults(
    run: Run, rng: random.Random, duration: float, replicas: int, rate: float, seed: int
) -> None:
    print(f"chaos: {duration:.0f} s, {replicas} replicas, ~{rate:.0f} messages/s, seed {seed}")
    ends = time.monotonic() + duration
    while time.monotonic() < ends:
        await asyncio.sleep(rng.uniform(2, 8))
        await run.fault()


def save(report: dict[str, Any]) -> Path:
    out = ROOT / ".local" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}-{report['seed']}.json"
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    parser.add_argument(
        "--stream-rate", type=float, default=300.0, help="streamed tail events per second"
    )
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    a = parser.parse_args()
    sys.exit(asyncio.run(main(a.duration, a.replicas, a.rate, a.stream_rate, a.seed)))
