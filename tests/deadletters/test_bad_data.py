"""Bad data against the real Kafka, PostgreSQL and S3: only the bad part is dead-lettered,
exactly once; the guard rail stops a flood; replay brings fixed messages back, once."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from pipeline.deadletters.record import encode, object_key, record
from pipeline.deadletters.store import open_store
from pipeline.errors import DecodeError
from pipeline.formats.decode import decode
from pipeline.kafka import clients, synth
from pipeline.kafka.publisher import BulkPublisher
from pipeline.postgres import flush
from pipeline.postgres.day_partitions import PartitionManager
from pipeline.settings import Settings
from pipeline.transform.batch import DeadLetter
from tests.conftest import env_of, read_topic, tailpipe
from tests.support.faults import wait_for
from tests.support.replica import (
    REFUSING_CHECK,
    START,
    Replica,
    assert_rollups_match_raw_rows,
    dead_letters_in_store,
    produce,
    stored_messages,
    stored_total,
    wait_stored,
)


def _first_field(value: bytes) -> str:
    try:
        decode(value)
    except DecodeError as error:
        return str(error).split(":")[0]
    raise AssertionError(f"{value!r} decodes")


POISON_FIELDS = frozenset(map(_first_field, synth.POISON))
"""Where the decoder says each of synth's undecodable messages goes wrong: `$`, `[0]`, ..."""


async def test_poison_mix_every_message_stored_or_dead_lettered_once(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 3})
    await db.execute(REFUSING_CHECK)
    produced = await produce(
        settings, 50_000, seed=21, poison_ratio=0.01, reject_ratio=0.01, refusing=True
    )
    assert produced.poison > 400
    assert produced.rejected > 400
    assert produced.refused > 400
    replicas.append(Replica(settings, TAILPIPE_BATCH_MAX_ROWS="20000"))
    await wait_stored(db, settings.topic, produced.count, 240)
    metrics = replicas[0].scrape()
    assert replicas[0].terminate() == 0

    stored = await stored_messages(db)
    dead = await dead_letters_in_store(settings, db)
    assert max(dead.values()) == 1, "a message dead-lettered twice"
    assert not stored & dead.keys(), "a message both stored and dead-lettered"
    assert len(stored) + len(dead) == produced.count
    assert await db.fetchval("SELECT count(*) FROM tail_events") == produced.invocations
    assert await db.fetchval("SELECT count(*) FROM tail_logs") == produced.log_rows
    classes = Counter(
        c for r in await db.fetch("SELECT error_classes, messages FROM dead_letters")
        for c in r[0]
        for _ in range(r[1] if len(r[0]) == 1 else 0)
    )  # fmt: skip
    mixed = await db.fetchval(
        "SELECT coalesce(sum(messages), 0) FROM dead_letters WHERE cardinality(error_classes) > 1"
    )
    assert classes["DecodeError"] + classes["CheckViolationError"] + mixed == len(dead)
    assert (
        metrics['tailpipe_dead_letters_total{reason="DecodeError"}']
        == produced.poison + produced.rejected
    )
    assert metrics['tailpipe_dead_letters_total{reason="CheckViolationError"}'] == produced.refused
    await assert_rollups_match_raw_rows(db)


async def test_guard_rail_stops_a_flood_of_bad_messages(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 2, settings.alerts_topic: 1})
    async with BulkPublisher(settings, settings.topic) as publisher:
        for message in itertools.islice(synth.messages(22, START), 200):
            await publisher.add(message.key, message.value)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 200, 90)
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n in range(3000):
            await publisher.add(None, b'{"not a trace item": %d' % n)
    replica = replicas[0]
    async with asyncio.timeout(60):
        # Another process trips; its /readyz is where it shows, so poll it.
        while (state := replica.readiness())["ready"]:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert "dead letters" in state["guard_rail"]
    assert replica.scrape()["tailpipe_guard_rail_tripped"] == 1
    # Nothing of the flood was dead-lettered or passed: the offsets stayed where they were.
    assert await stored_total(db, settings.topic) == 200
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
    # And a critical alert says so, on the alerts topic.
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) = 1 FROM critical_alerts"
            " WHERE rule = 'guard_rail' AND published_at IS NOT NULL"
        ),
        60,
        "guard rail alert published",
    )
    total = await db.fetchval("SELECT count(*) FROM critical_alerts")
    published = await read_topic(replace(settings, topic=settings.alerts_topic), total)
    [alert] = [
        orjson.loads(v) for k, v in published if k == f"guard_rail:{settings.topic}".encode()
    ]
    assert alert["severity"] == "critical"
    assert "guard rail" in alert["summary"]
    assert replica.terminate() == 0


def _with(value: bytes, **fields: object) -> bytes:
    return orjson.dumps({**orjson.loads(value), **fields})


def _item(script: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "scriptName": script,
            "outcome": "ok",
            "eventTimestamp": START + n,
            "event": {"request": {"url": f"https://x.test/{n}", "method": "GET"}},
            "logs": [{"level": "log", "message": [f"hello {n}"], "timestamp": START + n}],
            "exceptions": [],
        }
    )


async def test_replay_after_the_cause_is_fixed_stores_each_message_once(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 2})
    # A constraint the data breaks (as a bad migration would), on partitions that exist.
    await PartitionManager().ensure(db, {datetime.fromtimestamp(START / 1000, UTC).date()})
    await db.execute(
        "ALTER TABLE tail_events ADD CONSTRAINT no_blocked CHECK (script <> 'blocked-worker')"
    )
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n in range(600):
            script = "blocked-worker" if n % 20 == 0 else "fine-worker"
            await publisher.add(script.encode(), _item(script, n))
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, 600, 90)
    assert replicas[0].terminate() == 0
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 570
    dead = await db.fetchval("SELECT sum(messages) FROM dead_letters")
    assert dead == 30

    env = env_of(settings)
    listed = tailpipe("dlq", "list", "--error", "CheckViolationError", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "1 object holding 30 dead-lettered messages: 30 pending, 0 replayed" in listed.stdout
    dry = tailpipe("dlq", "replay", "--dry-run", env=env)
    assert dry.returncode == 1  # still failing: the cause is not fixed yet
    assert "would replay 0 messages" in dry.stdout
    assert "30 still failing" in dry.stdout
    await db.execute("ALTER TABLE tail_events DROP CONSTRAINT no_blocked")
    replayed = tailpipe("dlq", "replay", env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 30 messages" in replayed.stdout
    again = tailpipe("dlq", "replay", env=env)
    assert "replayed 0 messages from 0 objects" in again.stdout

    assert await db.fetchval("SELECT count(*) FROM tail_events") == 600
    distinct = await db.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM tail_events) d"
    )
    assert distinct == 600
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL") == 0
    await assert_rollups_match_raw_rows(db)


async def test_a_directory_as_the_dead_letter_store(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica], tmp_path: Path
) -> None:
    settings = replace(migrated, dlq_url=f"file://{tmp_path}/dlq")
    await clients.ensure_topics(settings, {settings.topic: 2})
    produced = await produce(settings, 1000, seed=23, poison_ratio=0.05)
    replicas.append(Replica(settings))
    await wait_stored(db, settings.topic, produced.count, 90)
    assert replicas[0].terminate() == 0
    files = sorted((tmp_path / "dlq" / settings.topic).rglob("*.jsonl.gz"))
    indexed = {r[0] for r in await db.fetch("SELECT object_key FROM dead_letters")}
    assert {str(f.relative_to(tmp_path / "dlq")) for f in files} == indexed
    assert not list((tmp_path / "dlq").rglob(".*.partial"))
    dead = await dead_letters_in_store(settings, db)
    assert len(dead) == sum(dead.values()) == produced.poison


async def test_every_dead_letter_is_logged_listed_and_keeps_the_replay_failing(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """Dead letters used to be silent: no log line, `dlq list` counted objects against a
    metric that counts messages, and the README's replay exit code was not held by a test."""
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 2})
    produced = await produce(settings, 3000, seed=31, poison_ratio=0.03)
    replicas.append(Replica(settings, TAILPIPE_BATCH_MAX_ROWS="1500"))
    await wait_stored(db, settings.topic, produced.count, 90)
    metrics = replicas[0].scrape()
    assert replicas[0].terminate() == 0
    index = {r["object_key"]: r for r in await db.fetch("SELECT * FROM dead_letters")}
    assert len(index) >= 2

    # One warning per object, naming it, its partition, offsets, messages and error class.
    warned = [x for x in replicas[0].log_lines() if x["event"] == "messages dead-lettered"]
    assert len(warned) == len(index)
    for line in warned:
        row = index[line["object"]]
        assert line["level"] == "warning"
        assert (line["topic"], line["partition"]) == (settings.topic, row["kafka_partition"])
        assert line["offsets"] == row["offsets"][:20]
        assert line["messages"] == row["messages"]
        assert line["error_classes"] == ["DecodeError"]
        assert line["error"] == row["error"][:200]  # the first dead letter's, as indexed
        assert line["error"].split(":")[0] in POISON_FIELDS
    assert sum(x["messages"] for x in warned) == produced.poison
    assert metrics['tailpipe_dead_letters_total{reason="DecodeError"}'] == produced.poison

    env = env_of(settings)
    listed = tailpipe("dlq", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == (
        f"{len(index)} objects holding {produced.poison} dead-lettered messages: "
        f"{produced.poison} pending, 0 replayed"
    )
    as_json = tailpipe("dlq", "list", "--json", env=env)
    assert sum(orjson.loads(x)["messages"] for x in as_json.stdout.splitlines()) == produced.poison

    # Undecodable messages stay undecodable: replay says so and exits 1, dry or not.
    for args in (("--dry-run",), ()):
        replay = tailpipe("dlq", "replay", *args, env=env)
        assert replay.returncode == 1, replay.stdout + replay.stderr
        assert f"{produced.poison} still failing" in replay.stdout
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL") == len(
        index
    )


async def test_replay_stores_the_nul_dead_letters_an_earlier_version_made(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    """An earlier version dead-lettered a message for one U+0000 (PostgreSQL refused the row).
    Those objects are in users' stores: replay must now store them, repaired, once."""
    settings = migrated
    day = datetime.fromtimestamp(START / 1000, UTC).date()
    await PartitionManager().ensure(db, {day})
    nul_in_text = ("CharacterNotInRepertoireError", 'invalid byte sequence for "UTF8": 0x00')
    nul_in_json = ("UntranslatableCharacterError", "unsupported Unicode escape sequence")
    line = {"level": "log", "timestamp": START}
    refused = [
        (_with(_item("nul-in-text", 10), logs=[{**line, "message": ["binary \x00 data"]}]),
         nul_in_text),
        (_with(_item("nul-in-json", 11), logs=[{**line, "message": [{"blob": "a\x00b"}]}]),
         nul_in_json),
        (_item("nul\x00script", 12), nul_in_text),
    ]  # fmt: skip
    letters = [DeadLetter(10 + i, START, None, v, (), *why) for i, (v, why) in enumerate(refused)]
    at = "2026-11-01T00:00:00.000Z"
    async with open_store(settings) as objects:
        key = object_key(objects.prefix, settings.topic, 0, 10, 12)
        await objects.put(key, encode(record(settings.topic, 0, d, at, Counter()) for d in letters))
    classes = [nul_in_text[0], nul_in_json[0]]
    entry = flush.IndexEntry(key, settings.topic, 0, 10, 12, [10, 11, 12], classes, nul_in_text[1])
    await flush.index_dead_letters(db, [entry])

    replayed = tailpipe("dlq", "replay", env=env_of(settings))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 3 messages from 1 objects; 0 still failing" in replayed.stdout
    scripts = {r[0] for r in await db.fetch("SELECT script FROM tail_events")}
    assert scripts == {"nul-in-text", "nul-in-json", "nul\ufffdscript"}
    messages = {r[0] for r in await db.fetch("SELECT message FROM tail_logs")}
    assert "binary \ufffd data" in messages
    data = await db.fetchval("SELECT data->>'blob' FROM tail_logs WHERE script = 'nul-in-json'")
    assert data == "a\ufffdb"
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL") == 0
    again = tailpipe("dlq", "replay", env=env_of(settings))
    assert "replayed 0 messages from 0 objects" in again.stdout
    assert await db.fetchval("SELECT count(*) FROM tail_events") == 3
