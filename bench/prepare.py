"""Set-up and clean-up of the ingest benchmark: schemas, the pre-filled topic, the workloads.

Also used by `bench/api.py` (through `bench.ingest`): `migrate` and `drop_kafka`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest

from pipeline.formats.identity import item_key
from pipeline.kafka import clients, synth
from pipeline.kafka.publisher import BulkPublisher
from pipeline.postgres.connect import connect, quote_ident
from pipeline.settings import Settings
from tests.conftest import env_of

ROOT = Path(__file__).resolve().parent.parent
START_MS = 1_764_374_400_000
PARTITIONS = 6
Workload = Literal["eight-scripts", "one-script"]
WORKLOADS: tuple[Workload, ...] = ("eight-scripts", "one-script")
ONE_SCRIPT = synth.SCRIPTS[0]
"""The script name of every item in the `one-script` workload."""


def child_env(settings: Settings, **more: str) -> dict[str, str]:
    """The environment that makes a child `tailpipe` (or bench child) use these settings."""
    return {**os.environ, **env_of(settings), **more}


def migrate(settings: Settings) -> None:
    """`tailpipe migrate` into the settings' schema (created if missing)."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "migrate"],
        env=child_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"migrate failed: {done.stderr}")


async def execute(settings: Settings, sql: str) -> None:
    """SQL in the settings' schema (e.g. an index variant, before writing a migration)."""
    conn = await connect(settings)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def workload(
    seed: int, kind: Workload, script_keys: bool = False
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of synthetic trace items, endless. `eight-scripts` is `synth` as it is;
    `one-script` gives every item the script name `ONE_SCRIPT`. Keys are each item's identity,
    as every producer writes them (`pipeline.formats.identity`); `script_keys` keys by script
    name instead, as producers did before, to show what that does to a busy script."""
    for message in synth.messages(seed, START_MS):
        if message.poison or (kind == "eight-scripts" and not script_keys):
            yield message.key, message.value
            continue
        item = orjson.loads(message.value)
        if kind == "one-script":
            item["scriptName"] = ONE_SCRIPT
        key = str(item["scriptName"]).encode() if script_keys else item_key(item)
        yield key, orjson.dumps(item)


async def fill(
    settings: Settings, n: int, seed: int, kind: Workload, script_keys: bool = False
) -> dict[str, float]:
    """A fresh topic of `PARTITIONS` partitions with n messages, published with their keys
    (and the alerts topic, as `tailpipe topics create` makes it)."""
    await clients.ensure_topics(settings, {settings.topic: PARTITIONS, settings.alerts_topic: 1})
    started = time.perf_counter()
    size = 0
    async with BulkPublisher(settings, settings.topic) as publisher:
        for key, value in itertools.islice(workload(seed, kind, script_keys), n):
            await publisher.add(key, value)
            size += len(value)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "messages_per_s": n / seconds, "mean_bytes": size / max(n, 1)}


async def partition_counts(settings: Settings) -> dict[int, int]:
    """Messages per partition of the settings' topic (all start at offset 0)."""
    return await clients.end_offsets(settings, settings.topic)


async def drop_schemas(base: Settings, schemas: list[str]) -> None:
    conn = await connect(base)
    try:
        for name in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
    finally:
        await conn.close()


async def vacuum(base: Settings, schema: str) -> None:
    """VACUUM (ANALYZE) every table of a schema."""
    conn = await connect(base)
    try:
        tables = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
            schema,
        )
        for row in tables:
            await conn.execute(f"VACUUM (ANALYZE) {quote_ident(schema)}.{quote_ident(row[0])}")
    finally:
        await conn.close()


async def drop_kafka(settings: Settings, topics: list[str], groups: list[str]) -> None:
    """Delete the topics and the consumer groups, as far as Kafka lets (best effort)."""
    admin = AIOKafkaAdminClient(**clients.client_options(settings))
    await admin.start()
    try:
        with contextlib.suppress(Exception):
            await admin.delete_topics(topics)
        for group in groups:  # aiokafka's admin client has no call for it: the request itself
            with contextlib.suppress(Exception):
                coordinator = await admin.find_coordinator(group)
                await admin._send_request_to_node(coordinator, DeleteGroupsRequest([group]))
    finally:
        await admin.close()
