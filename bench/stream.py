"""Streaming tail events against classic trace items: the same invocations, stored in one run.

    .venv/bin/python bench/stream.py [--invocations 20000] [--post 10] [--order stream,classic]
        [--seed 5] [--timeout 1800]

A streaming Tail Worker tells an invocation as events (onset, one per console line and
exception, return, outcome), posted a few at a time; a classic one sends the invocation whole.
What the streamed form costs is measured against that plain baseline: the same synthetic
invocations (`pipeline.kafka.synth`, as `make bench` uses), once as trace items keyed by their
identity, once as streaming tail events in posts of `--post` events of one invocation, keyed by
its id, as `tailpipe collect` publishes them. Each form gets its own topic, schema and one
`tailpipe run` replica, run one after the other in `--order` (so a pair can be measured both
ways round on a noisy host), each until `pipeline_offsets` accounts for every message.

Per form: invocations/s and events/s stored (the replica's start included, as for every run of
`make bench`), and what was stored, checked: one `tail_events` row per invocation, the same
lines, nothing left open in `stream_invocations`. The ratio is streamed over classic
invocations/s. Prints one table; writes `stream-<time>.json` under `.local/bench/`. A
benchmark, not a test: exit status 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.api import bench_settings, say, store  # noqa: E402
from bench.prepare import drop_kafka, drop_schemas, migrate  # noqa: E402
from pipeline.kafka import clients, synth  # noqa: E402
from pipeline.kafka.publisher import BulkPublisher  # noqa: E402
from pipeline.postgres.connect import connect  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

PARTITIONS = 6
FORMS = ("stream", "classic")
_TRIGGERS = (("request", "fetch"), ("cron", "scheduled"), ("scheduledTime", "alarm"),
             ("queue", "queue"))  # fmt: skip


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def streamed(item: dict[str, Any], invocation_id: str) -> list[dict[str, Any]]:
    """A trace item told as a streaming Tail Worker receives it: one envelope per event."""
    ts = item["eventTimestamp"]
    trace = invocation_id * 2
    events: list[tuple[int, dict[str, Any]]] = []
    event = item.get("event") or {}
    info: dict[str, Any] = {"type": "custom"}
    for key, kind in _TRIGGERS:
        if key in event:
            info = {"type": kind}
            break
    request = event.get("request")
    if request:
        info.update(method=request.get("method"), url=request.get("url"),
                    headers=[{"name": k, "value": v}
                             for k, v in (request.get("headers") or {}).items()])  # fmt: skip
    events.append((ts, {"type": "onset", "executionModel": "stateless",
                        "spanId": invocation_id[:16], "scriptName": item["scriptName"],
                        "scriptVersion": item.get("scriptVersion"), "info": info}))  # fmt: skip
    for line in item.get("logs") or ():
        events.append((line["timestamp"], {"type": "log", "level": line["level"],
                                           "message": line["message"]}))  # fmt: skip
    for exc in item.get("exceptions") or ():
        told = {"type": "exception", "name": exc["name"], "message": exc["message"],
                "stack": exc.get("stack")}  # fmt: skip
        events.append((exc["timestamp"], told))
    end = ts + item["wallTime"]
    response = event.get("response")
    if response:
        status = {"type": "fetch", "statusCode": response["status"]}
        events.append((end, {"type": "return", "info": status}))
    events.append((end, {"type": "outcome", "outcome": item["outcome"],
                         "cpuTime": item["cpuTime"], "wallTime": item["wallTime"]}))  # fmt: skip
    return [
        {"invocationId": invocation_id, "spanContext": {"traceId": trace},
         "timestamp": iso(at), "sequence": n, "event": body}
        for n, (at, body) in enumerate(events)
    ]  # fmt: skip


async def publish(
    settings: Settings, form: str, invocations: int, post: int, seed: int
) -> tuple[int, int]:
    """The invocations in `form`; (messages, events) published."""
    start = int(time.time() * 1000) - 3_600_000
    messages = events = 0
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n, message in enumerate(itertools.islice(synth.messages(seed, start), invocations)):
            invocation_id = f"{seed:08x}{n:024x}"
            told = streamed(orjson.loads(message.value), invocation_id)
            events += len(told)  # what either form tells, counted alike
            if form == "classic":
                await publisher.add(message.key, message.value)
                messages += 1
                continue
            for at in range(0, len(told), post):
                body = {"tailStream": told[at : at + post], "script": None}
                await publisher.add(invocation_id.encode(), orjson.dumps(body))
                messages += 1
    return messages, events


async def stored(settings: Settings) -> dict[str, int]:
    conn = await connect(settings)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM tail_events) AS invocations,"
            " (SELECT coalesce(sum(log_count + exception_count), 0) FROM tail_events) AS told,"
            " (SELECT count(*) FROM tail_logs) AS lines,"
            " (SELECT count(*) FROM stream_invocations) AS open"
        )
        assert row is not None
        return {k: int(v) for k, v in row.items()}
    finally:
        await conn.close()


async def run_form(args: argparse.Namespace, form: str, stamp: str) -> dict[str, Any]:
    name = f"bench_stream_{form}_{stamp}"
    settings = replace(bench_settings(name), topic=name, group=name)
    await drop_schemas(settings, [name])
    migrate(settings)
    await clients.ensure_topics(settings, {settings.topic: PARTITIONS})
    say(f"{form}: publishing {args.invocations:,} invocations to {name}")
    try:
        messages, events = await publish(settings, form, args.invocations, args.post, args.seed)
        log = args.out / f"stream-{form}-{stamp}.log"
        seconds = await store(settings, messages, args.timeout, log)
        found = await stored(settings)
    finally:
        await drop_kafka(settings, [settings.topic], [settings.group])
        await drop_schemas(settings, [name])
    return {
        "form": form, "messages": messages, "events": events, "seconds": round(seconds, 2),
        "invocations_per_s": round(args.invocations / seconds),
        "events_per_s": round(events / seconds),
        "us_per_invocation": round(seconds / args.invocations * 1e6, 1),
        "stored": found,
        "whole": found["invocations"] == args.invocations and found["open"] == 0
        and found["lines"] == found["told"],
    }  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    results = [await run_form(args, form, stamp) for form in args.order]
    by_form = {r["form"]: r for r in results}
    ratio = None
    if "stream" in by_form and "classic" in by_form:
        ratio = round(by_form["stream"]["invocations_per_s"]
                      / by_form["classic"]["invocations_per_s"], 3)  # fmt: skip
    say("")
    say(f"{'form':<8} {'messages':>9} {'events':>9} {'s':>7} {'inv/s':>8} {'events/s':>9}"
        f" {'us/inv':>8}  whole")  # fmt: skip
    for r in results:
        say(f"{r['form']:<8} {r['messages']:>9,} {r['events']:>9,} {r['seconds']:>7.1f}"
            f" {r['invocations_per_s']:>8,} {r['events_per_s']:>9,} {r['us_per_invocation']:>8}"
            f"  {r['whole']}")  # fmt: skip
    if ratio is not None:
        say(f"streamed / classic invocations per second: {ratio}")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
              "stream_over_classic": ratio}  # fmt: skip
    path = args.out / f"stream-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    say(f"report: {path}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=20_000)
    parser.add_argument("--post", type=int, default=10, help="events per message")
    parser.add_argument("--order", type=lambda s: s.split(","), default=list(FORMS))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    args = parser.parse_args(argv)
    if not set(args.order) <= set(FORMS):
        parser.error(f"--order: expected some of {', '.join(FORMS)}")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
