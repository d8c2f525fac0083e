"""Streaming Tail Worker traffic for `make chaos` (tests/chaos.py), and its accounting.

A streaming Tail Worker's `tailStream` hands its forwarder one event at a time; the forwarder
(deploy/cloudflare/tail-stream-forwarder) buffers them per producer script and posts what it
holds to `POST /v1/tail-stream?script=NAME`. `send` behaves like one for a few scripts:

- each invocation is told as the runtime tells it (`plan`): an onset first (its trigger in
  `info`), 1-30 lines, sometimes an exception, a `diagnosticChannel` message or a span
  (`spanOpen`, maybe `attributes`, `spanClose`), a `return`, an outcome last, numbered from 0;
- its events come over a second, and for some (long-lived, like a WebSocket's) over several
  seconds, so that they are open across flushes and across a kill -9 of a replica;
- every 0.2 s each script's buffer is posted, cut into requests of a few to 40 events: one
  invocation's events spread over several requests, one request mixing several invocations;
- 10% of invocations are told out of order: a run of their lines (sometimes the onset too) is
  held back until the request carrying their outcome was accepted;
- each request is sent until accepted (503 while Kafka is down, an answer it gave up waiting
  for, a connection refused), and 10% again after they were accepted, re-batched: re-serialised
  in another order, split, or put back in the buffer to go with newer events.

Then `account` checks, for every invocation whose every event was accepted at least once, that
PostgreSQL holds exactly one `tail_events` row (source 'stream') with what the events said, its
lines (`tail_logs` by `invocation_id`) exactly once each, its spans, and no open state.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson

from pipeline.formats.tail_stream import TRIGGERS

SCRIPTS = ("stream-api", "stream-chat", "stream-cron", "stream-queue")
FLUSH_S = 0.2
"""How often the forwarder posts its buffers."""
MAX_PER_REQUEST = 40
LEVELS = ("log", "log", "info", "info", "debug", "warn", "error")
OUTCOMES = ("ok",) * 12 + ("canceled", "exceededCpu", "exceededMemory")
LINES = ("log", "exception", "diagnosticChannel")
Envelope = dict[str, Any]


@dataclass
class Planned:
    """One invocation as the runtime tells it, what it must be stored as, and how its
    sending goes."""

    id: str
    script: str
    events: list[Envelope]
    """By `sequence`."""
    after_s: list[float]
    """When each event is told, in seconds after the invocation began."""
    event_type: str
    outcome: str
    status: int | None
    logs: int
    """`log` and `diagnosticChannel` events: its row's `log_count`."""
    exceptions: int
    lines: frozenset[int]
    """The sequences of its line events: each is one `tail_logs` row."""
    spans: int
    cpu_ms: int
    wall_ms: int
    truncated: bool
    long: bool
    withheld: frozenset[int]
    """Sequences held back until the request with its outcome was accepted."""
    began: float = 0.0
    told: int = 0
    """Events handed to the buffer, in sequence order (the withheld ones skipped)."""
    withheld_told: bool = False
    accepted: set[int] = field(default_factory=set)

    @property
    def final(self) -> int:
        return len(self.events) - 1

    @property
    def complete(self) -> bool:
        return len(self.accepted) == len(self.events)


@dataclass
class StreamSent:
    """What the streaming sender told, and how."""

    invocations: dict[str, Planned] = field(default_factory=dict)
    requests: int = 0
    """Every request sent, each attempt counted."""
    accepted: int = 0
    again_after_acceptance: int = 0
    """Accepted requests whose events were sent again (re-batched)."""
    events_again: int = 0
    retried: int = 0
    """Requests sent again unaccepted: a 503, an answer given up on, a connection refused."""
    refused: int = 0
    """Of those, the ones the collector answered 503 (Kafka down) or 429."""
    out_of_order: int = 0
    long: int = 0
    open_at_kills: int = 0
    """Invocations partly accepted when a replica was killed (-9), summed over the kills."""
    long_open_at_kills: int = 0

    def note_kill(self) -> None:
        """A replica is killed now: count the invocations it may have held open."""
        begun = [p for p in self.invocations.values() if p.accepted and not p.complete]
        self.open_at_kills += len(begun)
        self.long_open_at_kills += sum(1 for p in begun if p.long)

    @property
    def completed(self) -> list[Planned]:
        return [p for p in self.invocations.values() if p.complete]

    @property
    def events(self) -> int:
        return sum(len(p.events) for p in self.invocations.values())


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ms % 1000:03d}Z"
    )


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4) | 1:0{digits}x}"


def _onset(rng: random.Random, trigger: str, span_id: str, script: str) -> dict[str, Any]:
    model = "durableObject" if trigger in ("alarm", "hibernatableWebSocket") else "stateless"
    event: dict[str, Any] = {"type": "onset", "executionModel": model, "spanId": span_id,
                             "scriptTags": []}  # fmt: skip
    if rng.random() < 0.3:  # deployed, the runtime names it; locally it does not
        event["scriptName"] = script
    if trigger == "fetch":
        path = rng.choice(("/", "/api/items", "/api/items/42", "/login", "/static/app.js"))
        headers = [{"name": "host", "value": "example.com"},
                   {"name": "user-agent", "value": "chaos/1.0"}]  # fmt: skip
        if rng.random() < 0.2:
            headers.append({"name": "authorization", "value": "Bearer sk_live_chaos0123456789"})
        info: dict[str, Any] = {"type": "fetch", "method": rng.choice(("GET", "GET", "POST")),
                                "url": f"https://example.com{path}", "headers": headers,
                                "cfJson": {"colo": "AMS"}}  # fmt: skip
    elif trigger == "scheduled":
        info = {"type": "scheduled", "cron": "*/5 * * * *", "scheduledTime": 1_700_000_000_000}
    elif trigger == "queue":
        info = {"type": "queue", "queueName": "jobs", "batchSize": rng.randint(1, 10)}
    elif trigger == "hibernatableWebSocket":
        info = {"type": "hibernatableWebSocket", "info": {"type": "message"}}
    else:
        info = {"type": trigger}
    event["info"] = info
    return event


def plan(rng: random.Random, now_ms: int, script: str) -> Planned:
    """One invocation of `script` beginning at `now_ms`, as the runtime would tell it."""
    trigger = {
        "stream-api": ("fetch", "fetch", "fetch", "jsrpc"),
        "stream-chat": ("hibernatableWebSocket", "alarm", "fetch"),
        "stream-cron": ("scheduled",),
        "stream-queue": ("queue", "jsrpc"),
    }[script]
    trigger_type = rng.choice(trigger)
    iid, trace, root = _hex(rng, 32), _hex(rng, 32), _hex(rng, 16)
    body: list[tuple[dict[str, Any], str]] = []  # (event, the span it is told in)
    truncated = False
    for n in range(rng.randint(1, 30)):
        if rng.random() < 0.02:
            body.append(({"type": "log", "level": "log", "message": "y" * 200,
                          "truncated": True}, root))  # fmt: skip
            truncated = True
        else:
            level = rng.choice(LEVELS)
            message: list[Any] = [f"{level} line {n}"]
            if rng.random() < 0.3:
                message.append({"n": n, "user": f"u{rng.randrange(1000)}"})
            body.append(({"type": "log", "level": level, "message": message}, root))
    thrown = rng.random() < 0.2
    if thrown:
        kind = rng.choice(("TypeError", "Error", "RangeError"))
        at = rng.randrange(len(body) + 1)
        body.insert(at, ({"type": "exception", "name": kind,
                          "message": f"chaos {kind.lower()} {rng.randrange(5)}",
                          "stack": "    at handler (worker.js:10:5)"}, root))  # fmt: skip
    if rng.random() < 0.05:
        body.insert(rng.randrange(len(body) + 1), ({"type": "diagnosticChannel",
                    "channel": "chaos", "message": {"n": 1}}, root))  # fmt: skip
    spans = 0
    if rng.random() < 0.3:
        spans = 1
        child = _hex(rng, 16)
        i = rng.randrange(len(body) + 1)
        j = rng.randrange(i, len(body) + 1)
        close = ({"type": "spanClose", "outcome": "ok"}, child)
        body.insert(j, close)
        if rng.random() < 0.5:
            body.insert(j, ({"type": "attributes",
                             "info": [{"name": "http.response.status_code", "value": "200"}]},
                            child))  # fmt: skip
        body.insert(i, ({"type": "spanOpen", "name": "fetch", "spanId": child}, root))
    status = rng.choice((200, 200, 200, 404, 500)) if trigger_type == "fetch" else None
    ret: dict[str, Any] = {"type": "return"}
    if status is not None:
        ret["info"] = {"type": "fetch", "statusCode": status}
    outcome = "exception" if thrown else rng.choice(OUTCOMES)
    long = rng.random() < 0.1
    span_s = rng.uniform(3, 15) if long else rng.uniform(0.05, 1.0)
    wall_ms = max(1, int(span_s * 1000))
    if wall_ms % 101 == 7:  # tests/support/replica.py REFUSING_CHECK: the direct producer's part
        wall_ms += 1
    cpu_ms = rng.randint(0, min(wall_ms, 50))
    told: list[tuple[dict[str, Any], str]] = [
        (_onset(rng, trigger_type, root, script), ""),
        *body,
        (ret, root),
        ({"type": "outcome", "outcome": outcome, "cpuTime": cpu_ms, "wallTime": wall_ms}, root),
    ]
    after = sorted(rng.uniform(0, span_s) for _ in told)
    after[0], after[-1] = 0.0, span_s
    events: list[Envelope] = []
    for seq, ((event, span), at_s) in enumerate(zip(told, after, strict=True)):
        context = {"traceId": trace, "spanId": span} if span else {"traceId": trace}
        events.append({"invocationId": iid, "spanContext": context,
                       "timestamp": _iso(now_ms + int(at_s * 1000)), "sequence": seq,
                       "event": event})  # fmt: skip
    lines = frozenset(s for s, e in enumerate(events) if e["event"]["type"] in LINES)
    withheld: frozenset[int] = frozenset()
    if rng.random() < 0.1:
        ordered = sorted(s for s in lines if s < len(events) - 1)
        start = rng.randrange(len(ordered))
        run = ordered[start : start + rng.randint(1, 4)]
        withheld = frozenset(run) | ({0} if rng.random() < 0.3 else set())
    return Planned(
        iid, script, events, after, TRIGGERS.get(trigger_type, "unknown"), outcome, status,
        sum(1 for s in lines if events[s]["event"]["type"] != "exception"), int(thrown),
        lines, spans, cpu_ms, wall_ms, truncated, long, withheld,
    )  # fmt: skip


Buffered = tuple[Planned, int]
"""An invocation and the sequence of one of its events, waiting in a script's buffer."""


async def send(
    url: str, token: str, rate: float, stop: asyncio.Event, seed: int, sent: StreamSent
) -> None:
    """Tell invocations at about `rate` events per second until `stop`, then finish telling
    the ones begun: every invocation it began is complete when this returns."""
    rng = random.Random(seed)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    buffers: dict[str, list[Buffered]] = {s: [] for s in SCRIPTS}
    active: list[Planned] = []
    budget, last = 0.0, time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            now = time.monotonic()
            stopping = stop.is_set()
            if not stopping:
                # No catching up after a stall (Kafka down): the runtime would have dropped.
                budget = min(budget + (now - last) * rate, rate * FLUSH_S * 2)
                while budget > 0:
                    p = plan(rng, int(time.time() * 1000), rng.choice(SCRIPTS))
                    p.began = now
                    budget -= len(p.events)
                    active.append(p)
                    sent.invocations[p.id] = p
                    sent.out_of_order += bool(p.withheld)
                    sent.long += p.long
            last = now
            for p in active:
                buffers[p.script].extend((p, s) for s in _due(p, now, stopping))
            for script, buffer in buffers.items():
                while buffer:
                    cut = buffer[: rng.randint(5, MAX_PER_REQUEST)]
                    del buffer[: len(cut)]
                    await _post(client, url, headers, script, cut, rng, sent)
                    if rng.random() < 0.1:
                        sent.again_after_acceptance += 1
                        sent.events_again += len(cut)
                        again = list(cut)
                        rng.shuffle(again)
                        if rng.random() < 0.5:  # with the newer events, in a later request
                            buffer.extend(again)
                            continue
                        at = rng.randint(1, len(again))
                        for part in (again[:at], again[at:]):
                            if part:
                                await _post(client, url, headers, script, part, rng, sent,
                                            again=True)  # fmt: skip
            active = [p for p in active if not p.complete]
            if stopping and not active and not any(buffers.values()):
                return
            await asyncio.sleep(max(0.0, FLUSH_S - (time.monotonic() - now)))


def _due(p: Planned, now: float, stopping: bool) -> list[int]:
    """The sequences of `p` to hand to the buffer now: those whose time came (all of them
    once stopping), less the withheld ones until its outcome was accepted."""
    due = []
    while p.told < len(p.events) and (stopping or p.after_s[p.told] <= now - p.began):
        if p.told not in p.withheld:
            due.append(p.told)
        p.told += 1
    if p.withheld and not p.withheld_told and p.final in p.accepted:
        p.withheld_told = True
        due.extend(sorted(p.withheld))
    return due


async def _post(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    script: str,
    events: list[Buffered],
    rng: random.Random,
    sent: StreamSent,
    *,
    again: bool = False,
) -> None:
    """Post until accepted; then its events count as accepted. A copy is re-serialised."""
    envelopes = [p.events[s] for p, s in events]
    if again:
        envelopes = [dict(reversed(list(e.items()))) for e in envelopes]
    body = orjson.dumps(envelopes)
    backoff = 0.2
    while True:
        sent.requests += 1
        # Now and then it stops waiting before the answer: it cannot know whether the events
        # reached Kafka, so it sends them again.
        timeout = 0.005 if rng.random() < 0.03 else 30.0
        try:
            answer = await client.post(url, params={"script": script}, content=body,
                                       headers=headers, timeout=timeout)  # fmt: skip
            if answer.is_success:
                break
            if answer.status_code not in (429, 503):
                raise SystemExit(f"the collector answered {answer.status_code}: {answer.text}")
            sent.refused += 1
        except httpx.TransportError:
            pass
        sent.retried += 1
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
    sent.accepted += 1
    for p, s in events:
        p.accepted.add(s)


_ROWS = """
SELECT extra->>'invocationId' AS id, script, event_type, outcome, status, log_count,
       exception_count, cpu_ms, wall_ms, truncated
FROM tail_events WHERE source = 'stream'
"""


async def account(
    conn: asyncpg.Connection, sent: StreamSent, messages: int, dead: int
) -> tuple[dict[str, Any], list[str]]:
    """The streamed invocations against PostgreSQL: the report's lines, and what is wrong (a
    few examples of each kind). `messages`: the topic's messages keyed by a sent invocation;
    `dead`: how many of them were dead-lettered."""
    done = {p.id: p for p in sent.completed}
    rows: dict[str, list[asyncpg.Record]] = {}
    for r in await conn.fetch(_ROWS):
        rows.setdefault(r["id"], []).append(r)
    stored_lines: dict[str, Counter[int]] = {}
    for r in await conn.fetch(
        "SELECT invocation_id, seq FROM tail_logs WHERE invocation_id IS NOT NULL"
    ):
        stored_lines.setdefault(r["invocation_id"], Counter())[r["seq"]] += 1
    spans = {r[0]: r[1] for r in await conn.fetch(
        "SELECT invocation_id, count(*) FROM tail_spans WHERE invocation_id IS NOT NULL"
        " GROUP BY 1")}  # fmt: skip
    open_states = {r[0]: r[1] for r in await conn.fetch(
        "SELECT invocation_id, closed FROM stream_invocations")}  # fmt: skip

    problems: dict[str, list[str]] = {}

    def wrong(kind: str, what: str) -> None:
        problems.setdefault(kind, []).append(what)

    missing = duplicated = mismatched = 0
    lines_expected = lines_stored = lines_missing = lines_twice = lines_unexpected = 0
    spans_expected = spans_stored = 0
    for iid, p in done.items():
        found = rows.get(iid, [])
        if not found:
            missing += 1
            wrong("missing", f"{iid} ({p.script}, {len(p.events)} events, long={p.long}, "
                             f"withheld={sorted(p.withheld)})")  # fmt: skip
        elif len(found) > 1:
            duplicated += len(found) - 1
            wrong("twice", f"{iid}: {len(found)} rows, outcomes {[r['outcome'] for r in found]}")
        for r in found[:1]:
            want = (p.script, p.event_type, p.outcome, p.status, p.logs, p.exceptions, p.cpu_ms,
                    p.wall_ms, p.truncated)  # fmt: skip
            got = (r["script"], r["event_type"], r["outcome"], r["status"], r["log_count"],
                   r["exception_count"], r["cpu_ms"], r["wall_ms"], r["truncated"])  # fmt: skip
            if got != want:
                mismatched += 1
                wrong("wrong", f"{iid}: stored {got}, told {want}")
        lines = stored_lines.get(iid, Counter())
        lines_expected += len(p.lines)
        lines_stored += sum(lines.values())
        absent = p.lines - lines.keys()
        extra = lines.keys() - p.lines
        twice = sum(n - 1 for n in lines.values())
        lines_missing += len(absent)
        lines_unexpected += sum(lines[s] for s in extra)
        lines_twice += twice
        if absent or extra or twice:
            wrong("lines", f"{iid}: lines missing {sorted(absent)}, unknown {sorted(extra)}, "
                           f"twice {sorted(s for s, n in lines.items() if n > 1)}")  # fmt: skip
        spans_expected += p.spans
        spans_stored += spans.get(iid, 0)
        if spans.get(iid, 0) != p.spans:
            wrong("spans", f"{iid}: {spans.get(iid, 0)} spans stored, {p.spans} told")
    left_open = [i for i in done if i in open_states]
    for iid in left_open[:5]:
        wrong("open", f"{iid}: still in stream_invocations (closed={open_states[iid]})")
    unknown_rows = sum(len(v) for k, v in rows.items() if k not in sent.invocations)
    report: dict[str, Any] = {
        "stream invocations begun": len(sent.invocations),
        "stream invocations completed by the sender": len(done),
        "stream long-lived (several seconds)": sent.long,
        "stream told out of order": sent.out_of_order,
        "stream open at a kill -9 (sum over kills)": sent.open_at_kills,
        "stream long-lived open at a kill -9": sent.long_open_at_kills,
        "stream events told": sent.events,
        "stream requests sent": sent.requests,
        "stream requests accepted": sent.accepted,
        "stream sent again after acceptance": sent.again_after_acceptance,
        "stream events sent again after acceptance": sent.events_again,
        "stream sent again unanswered or refused": sent.retried,
        "stream of those answered 503 or 429": sent.refused,
        "stream messages in the topic": messages,
        "stream messages dead-lettered": dead,
        "stream invocations stored": sum(1 for i in done if rows.get(i)),
        "stream invocations missing": missing,
        "stream duplicate invocations": duplicated,
        "stream rows unlike their events": mismatched,
        "stream rows of unknown invocations": unknown_rows,
        "stream lines told": lines_expected,
        "stream lines stored": lines_stored,
        "stream lines missing": lines_missing,
        "stream lines stored twice": lines_twice,
        "stream lines unknown": lines_unexpected,
        "stream spans told": spans_expected,
        "stream spans stored": spans_stored,
        "stream invocations left open": len(left_open),
        "stream_invocations rows at the end": len(open_states),
    }
    examples = [f"{kind}: {what}" for kind, found in problems.items() for what in found[:5]]
    examples += [f"{kind}: ... {len(found) - 5} more" for kind, found in problems.items()
                 if len(found) > 5]  # fmt: skip
    return report, examples


def passed(report: dict[str, Any]) -> bool:
    """Whether the streamed part of the accounting holds."""
    return bool(
        report["stream invocations completed by the sender"]
        == report["stream invocations begun"]
        == report["stream invocations stored"]
        and report["stream messages dead-lettered"] == 0
        and report["stream invocations missing"] == 0
        and report["stream duplicate invocations"] == 0
        and report["stream rows unlike their events"] == 0
        and report["stream rows of unknown invocations"] == 0
        and report["stream lines stored"] == report["stream lines told"]
        and report["stream lines missing"] == 0
        and report["stream lines stored twice"] == 0
        and report["stream lines unknown"] == 0
        and report["stream spans stored"] == report["stream spans told"]
        and report["stream invocations left open"] == 0
        and report["stream_invocations rows at the end"] == 0
    )
