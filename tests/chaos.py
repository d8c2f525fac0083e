"""`make chaos`: the failure scenarios of the test suite, longer, at random, then an accounting.

Several `tailpipe run` replicas consume a topic that a producer keeps filling (with undecodable
messages, unstorable ones, and ones a CHECK constraint makes PostgreSQL refuse), while faults
are injected at random times: kill -9 and SIGTERM of a replica, PostgreSQL stopped, the S3
endpoint stopped, and a replica killed while its dead-letter write is unanswered. At the end
every fault is repaired, the replicas drain the topic, and the run is accounted for: produced =
stored + dead-lettered, with no duplicate row, no dead letter twice, and no object the index
does not know.

    python -m tests.chaos [--duration 120] [--replicas 2] [--rate 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from pipeline.deadletters.record import partition_prefix
from pipeline.deadletters.store import open_store
from pipeline.kafka import clients
from pipeline.postgres.connect import connect
from pipeline.settings import Settings, load
from tests.conftest import ROOT, env_of, tailpipe, unique
from tests.support.faults import TcpProxy, postgres_down, postgres_up
from tests.support.replica import (
    REFUSING_CHECK,
    Produced,
    Replica,
    dead_letters_in_store,
    produce,
    stored_messages,
    stored_total,
)

FAULTS = ("kill9", "sigterm", "postgres", "s3", "s3_hold_kill9")


class Run:
    def __init__(self, settings: Settings, proxy: TcpProxy, rng: random.Random) -> None:
        self.settings = settings
        self.proxy = proxy
        self.rng = rng
        self.replicas: list[Replica] = []
        self.retired: list[Replica] = []
        self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)

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
        elif kind == "s3":
            await self.proxy.refuse()
            await asyncio.sleep(pause)
            await self.proxy.restore()
        else:
            self.proxy.hold()
            await asyncio.sleep(self.rng.uniform(1, 4))
            victim = self.pick()
            victim.kill()
            self.retired.append(victim)
            self.proxy.release()
            self.start()


async def feed(settings: Settings, rate: float, stop: asyncio.Event, seed: int) -> Produced:
    """Publish chunks of synthetic messages at about `rate` per second until `stop`."""
    total = Produced(0, 0, 0, 0, Counter(), 0)
    chunk = max(100, int(rate))
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        got = await produce(settings, chunk, seed * 100_000 + n, 0.01, 0.01, refusing=True)
        n += 1
        total = total + got
        await asyncio.sleep(max(0.0, chunk / rate - (time.monotonic() - started)))
    return total


async def account(settings: Settings, produced: Produced) -> dict[str, Any]:
    conn = await connect(settings)
    try:
        stored = await stored_messages(conn)
        dead = await dead_letters_in_store(settings, conn)
        events = await conn.fetchval("SELECT count(*) FROM tail_events")
        indexed = {r[0] for r in await conn.fetch("SELECT object_key FROM dead_letters")}
        partitions = [r[0] for r in await conn.fetch(
            "SELECT partition FROM pipeline_offsets WHERE topic = $1", settings.topic)]  # fmt: skip
        offsets = await stored_total(conn, settings.topic)
    finally:
        await conn.close()
    in_store: set[str] = set()
    async with open_store(settings) as store:
        for p in partitions:
            prefix = partition_prefix(store.prefix, settings.topic, p)
            in_store |= set(await store.keys_after(prefix, None))
    return {
        "produced": produced.count,
        "stored offsets": offsets,
        "stored messages": len(stored),
        "dead-lettered": len(dead),
        "expected dead (poison + unstorable + refused)": produced.dead,
        "missing": produced.count - len(stored | dead.keys()),
        "duplicate invocations": events - produced.invocations,
        "stored and dead-lettered": len(stored & dead.keys()),
        "dead letters twice": sum(1 for n in dead.values() if n > 1),
        "objects not indexed": len(in_store - indexed),
    }


async def main(duration: float, replicas: int, rate: float, seed: int) -> int:
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
    await clients.ensure_topics(settings, {settings.topic: 6})
    endpoint = urlsplit(settings.s3_endpoint)
    rng = random.Random(seed)
    async with TcpProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80) as proxy:
        run = Run(settings, proxy, rng)
        for _ in range(replicas):
            run.start()
        stop = asyncio.Event()
        feeding = asyncio.create_task(feed(settings, rate, stop, seed))
        print(f"chaos: {duration:.0f} s, {replicas} replicas, ~{rate:.0f} messages/s, seed {seed}")
        ends = time.monotonic() + duration
        try:
            while time.monotonic() < ends:
                await asyncio.sleep(rng.uniform(2, 8))
                await run.fault()
        finally:
            stop.set()
            produced = await feeding
        print(f"  repaired; draining {produced.count} messages", flush=True)
        conn = await connect(settings)
        try:
            async with asyncio.timeout(600):
                # The replicas make the progress; PostgreSQL is where it shows.
                while await stored_total(conn, settings.topic) < produced.count:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)
        finally:
            await conn.close()
        for replica in run.replicas:
            replica.terminate()
    report = await account(settings, produced)
    report["faults"] = run.faults
    ok = (
        report["stored offsets"] == report["produced"]
        and report["missing"] == 0
        and report["dead-lettered"] == report["expected dead (poison + unstorable + refused)"]
        and report["duplicate invocations"] == 0
        and report["stored and dead-lettered"] == 0
        and report["dead letters twice"] == 0
        and report["objects not indexed"] == 0
    )
    print(f"\n{'chaos accounting':40} {'count':>10}")
    for name, value in report.items():
        if name != "faults":
            print(f"{name:40} {value:>10,}")
    print(f"{'faults injected':40} {sum(run.faults.values()):>10}  "
          + ", ".join(f"{k} {v}" for k, v in run.faults.items()))  # fmt: skip
    print("\nOK: produced = stored + dead-lettered, nothing twice" if ok else "\nFAILED")
    print(f"JSON: {save({**report, 'ok': ok, 'seed': seed}).relative_to(ROOT)}")
    if ok:  # a failed run's schema stays, to look into
        conn = await connect(base)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
    return 0 if ok else 1


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
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    a = parser.parse_args()
    sys.exit(asyncio.run(main(a.duration, a.replicas, a.rate, a.seed)))
