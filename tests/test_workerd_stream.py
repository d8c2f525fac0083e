"""Streaming Tail Workers through the whole pipeline, with the real Workers runtime.

The pinned `workerd` from npm serves tests/workerd/stream-e2e.capnp: the producer of
tests/test_workerd.py (every route, its Durable Object's fetch and alarm, the scheduled handler
through the driver) and stream-marks.js (BigInts in a diagnostics-channel message, and /slow,
an invocation held open). Each streams its events to the project's own
deploy/cloudflare/tail-stream-forwarder, unchanged, which posts them to a real `tailpipe
collect` (POST /v1/tail-stream), which publishes them to the real Kafka, from which one real
`tailpipe run` replica stores them in PostgreSQL. Each producer also streams to a capture Worker
(stream-capture.js) posting to this test, which so learns what the runtime delivered,
independently of the forwarder.

/slow is held open until PostgreSQL shows its first line: the line is stored before the
invocation ends, while the invocation waits in `stream_invocations`. Once everything is stored,
every envelope the runtime delivered is posted to the collector again, batched otherwise, as a
forwarder's retry would: nothing new may be stored.

Everything runs once per module (the `run` fixture); each test then checks one promise against
that snapshot, so a broken promise fails alone. The run's logs, the captured envelopes and a
summary (invocations, events, lines, spans, duplicates, wall time) are written to
.local/workerd-stream-test/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest

from pipeline.kafka import clients
from pipeline.postgres.connect import connect
from pipeline.settings import Settings
from tests.conftest import ROOT, env_of, free_port
from tests.support.replica import assert_rollups_match_raw_rows, stored_total
from tests.support.workers import (
    Process,
    collector,
    http_server,
    listening,
    replica,
    scratch,
    show,
    wait_for,
    workerd_binary,
)
from tests.test_workerd import CRON, HEADERS, QUERY_SECRET, ROUTES, SECRETS

# Its module fixtures start services against the local stack.
pytestmark = pytest.mark.stack

CONFIG = ROOT / "tests" / "workerd" / "stream-e2e.capnp"
TOKEN = "collect-" + uuid.uuid4().hex
"""The forwarders' TAILPIPE_TOKEN, the collector's TAILPIPE_COLLECT_TOKENS."""
PRODUCER = "stream-producer"
MARKS = "stream-marks"
"""Each forwarder's TAILPIPE_SCRIPT in stream-e2e.capnp."""
ROUTE = "/v1/tail-stream"
REPOST_EVENTS = 7
"""Envelopes per request when the test posts them all again (the forwarder posts up to 100)."""
HOLD_S = 30.0
"""Longest /hold keeps stream-marks' /slow open."""
DEADLINE_S = 30.0
"""For each wait on another process: reported, stored, redelivered."""
BIGINTS = {"big": "9007199254740993", "nested": ["1", {"deeper": "-2"}]}
"""stream-marks.js's diagnostics-channel message, BigInts written as decimal strings."""
SLOW_LINE = "waiting for the receiver"
"""/slow's first line, logged before it waits for the hold."""
BULK_LINES = 300

Trigger = tuple[str, str, str | None]
"""An invocation, told apart by the script's name, its event type and URL path."""
EXPECTED: Counter[Trigger] = Counter(
    [
        *((PRODUCER, "fetch", path) for path in ROUTES),
        (PRODUCER, "fetch", "/arm"),  # the Durable Object's fetch ...
        (PRODUCER, "alarm", None),  # ... and, 50 ms later, its alarm
        (PRODUCER, "scheduled", None),
        (MARKS, "fetch", "/bigint"),
        (MARKS, "fetch", "/slow"),
    ]
)
"""What the runtime must report. (The driver Worker that fires `scheduled` is not tailed.)"""
STATUSES = {**ROUTES, "scheduled": 200, "/bigint": 200, "/slow": 200}
TRIGGERS = {"fetch": "fetch", "scheduled": "scheduled", "alarm": "alarm"}
"""The onset's `info.type` -> the event type stored, for the triggers this producer has."""
LINES = ("log", "exception", "diagnosticChannel")
"""The event types stored as tail_logs rows."""


# ---------------------------------------------------------------- the runtime and the receiver
@dataclass
class Receiver:
    """The capture Workers' server (POST /capture/<script>) and stream-marks' hold (GET /hold),
    in threads. `captured` holds each script's envelopes in the order they arrived."""

    captured: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    holding: int = 0
    """GET /hold requests waiting now."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            return {script: list(events) for script, events in self.captured.items()}

    def outcomes(self) -> int:
        return sum(
            1 for es in self.snapshot().values() for e in es if e["event"]["type"] == "outcome"
        )

    def _capture(self, script: str, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.captured.setdefault(script, []).extend(events)

    def _hold(self) -> bool:
        with self.lock:
            self.holding += 1
        try:
            return self.released.wait(HOLD_S)
        finally:
            with self.lock:
                self.holding -= 1


@contextlib.contextmanager
def receiving() -> Iterator[tuple[Receiver, str]]:
    """The receiver on a free loopback port; yields it and its base URL."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 with keep-alive, as the runtime's fetch expects (tests/support/workers.py).
        protocol_version = "HTTP/1.1"
        timeout = 60

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if not path.startswith("/capture/"):
                self._answer(404)
                return
            # The standard library's parser keeps a lone surrogate escape, as the collector does.
            receiver._capture(path.removeprefix("/capture/"), json.loads(body))
            self._answer(204)

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/hold":
                self._answer(200 if receiver._hold() else 504)
            else:
                self._answer(404)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per POST on stderr is noise

    with http_server(Handler) as url:
        try:
            yield receiver, url
        finally:
            receiver.released.set()  # a /slow still held ends now


@dataclass
class Runtime:
    process: Process
    producer: str
    marks: str
    driver: str

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@contextlib.contextmanager
def runtime(collect: str, receiver: str, logs: Path) -> Iterator[Runtime]:
    """workerd on stream-e2e.capnp: the forwarders posting to the collector at `collect`, the
    capture Workers and the hold at the test's `receiver`."""
    producer, marks, driver = free_port(), free_port(), free_port()
    argv = [
        str(workerd_binary()), "serve", str(CONFIG), "config",
        # The driver's `service_binding_extra_handlers` flag is experimental in this version.
        "--experimental", "--verbose",
        "-s", f"producer=127.0.0.1:{producer}", "-s", f"marks=127.0.0.1:{marks}",
        "-s", f"driver=127.0.0.1:{driver}",
    ]  # fmt: skip
    env = {
        "TAILPIPE_URL": collect,
        "TAILPIPE_TOKEN": TOKEN,
        "CAPTURE_URL": f"{receiver}/capture/{PRODUCER}",
        "CAPTURE_MARKS_URL": f"{receiver}/capture/{MARKS}",
        "HOLD_URL": f"{receiver}/hold",
    }
    process = Process("workerd", argv, env, logs)
    try:
        process.wait_ready(lambda: all(map(listening, (producer, marks, driver))), 30)
        yield Runtime(
            process,
            f"http://127.0.0.1:{producer}",
            f"http://127.0.0.1:{marks}",
            f"http://127.0.0.1:{driver}",
        )
    finally:
        process.stop()


# ---------------------------------------------------------------- what PostgreSQL holds
@dataclass
class Snapshot:
    """PostgreSQL's rows once every message of the topic up to `messages` is stored."""

    messages: int
    """The topic's end offsets, summed: every message the collector published so far."""
    stored: int
    """pipeline_offsets' next offsets, summed: every message the replica stored."""
    events: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    open: int
    """stream_invocations rows."""
    dead_letters: int
    texts: list[str]
    """Every tail_events, tail_logs and tail_spans row as PostgreSQL prints a row."""
    rollups: dict[str, int]
    """What the rollups count: invocations, lines, errors, API calls, span operations."""
    rollups_unlike_rows: str | None
    """How the rollups differ from the raw rows (`assert_rollups_match_raw_rows`), if they do."""


ROLLUPS = {
    "requests": "SELECT coalesce(sum(requests), 0) FROM tail_metrics_hourly"
    " WHERE script = '*' AND event_type = '*'",
    "lines": "SELECT coalesce(sum(value::bigint), 0) FROM tail_metrics_hourly,"
    " jsonb_each_text(levels) WHERE script = '*' AND event_type = '*'",
    "errors": "SELECT coalesce(sum(occurrences), 0) FROM error_summary",
    "api_calls": "SELECT coalesce(sum(calls), 0) FROM api_calls_daily",
    "span_operations": "SELECT coalesce(sum(spans), 0) FROM span_operations_hourly",
}


async def _count(db: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await db.fetchval(sql, *args))


async def _messages(settings: Settings) -> int:
    return sum((await clients.end_offsets(settings, settings.topic)).values())


async def _settled(
    db: asyncpg.Connection,
    settings: Settings,
    invocations: int,
    duplicates: Callable[[], bool] | None = None,
) -> bool:
    """Wait until the replica stored every message published and `invocations` rows are in
    tail_events (and `duplicates()`, when given, is true); False at the deadline, so that the
    tests then say what is missing."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        rows = await _count(db, "SELECT count(*) FROM tail_events")
        caught_up = await stored_total(db, settings.topic) >= await _messages(settings)
        if rows >= invocations and caught_up and (duplicates is None or duplicates()):
            return True
        # Other processes make the progress; PostgreSQL and Kafka are where it shows.
        await asyncio.sleep(0.1)
    return False


async def snapshot(settings: Settings) -> Snapshot:
    db = await connect(settings)
    try:
        messages = await _messages(settings)
        stored = await stored_total(db, settings.topic)
        events = await db.fetch(
            "SELECT *, extra::text AS extra_text, extra->>'invocationId' AS invocation_id,"
            " (extract(epoch FROM ts) * 1000)::bigint AS ms FROM tail_events"
        )
        logs = await db.fetch(
            "SELECT *, data::text AS data_text, (extract(epoch FROM ts) * 1000)::bigint AS ms"
            " FROM tail_logs ORDER BY kafka_partition, kafka_offset, item, seq"
        )
        spans = await db.fetch(
            "SELECT script, name, encode(trace_id, 'hex') AS trace,"
            " encode(span_id, 'hex') AS span FROM tail_spans"
        )
        opened = await _count(db, "SELECT count(*) FROM stream_invocations")
        dead = await _count(db, "SELECT coalesce(sum(messages), 0) FROM dead_letters")
        texts = await db.fetch(
            "SELECT e::text FROM tail_events e UNION ALL SELECT l::text FROM tail_logs l"
            " UNION ALL SELECT s::text FROM tail_spans s"
        )
        rollups = {name: await _count(db, sql) for name, sql in ROLLUPS.items()}
        try:
            await assert_rollups_match_raw_rows(db)
            unlike = None
        except AssertionError as mismatch:
            unlike = str(mismatch)
    finally:
        await db.close()
    return Snapshot(
        messages, stored, [dict(r) for r in events], [dict(r) for r in logs],
        [dict(r) for r in spans], opened, dead, [r[0] for r in texts], rollups, unlike,
    )  # fmt: skip


async def while_held(settings: Settings, receiver: Receiver) -> dict[str, Any]:
    """What PostgreSQL holds of /slow while it is held open: once its first line is stored,
    that line, its invocation's tail_events rows and its waiting state."""
    db = await connect(settings)
    try:
        async with asyncio.timeout(DEADLINE_S):
            # The forwarder posts on its timer, the replica stores: poll PostgreSQL.
            while not (line := await db.fetchrow(  # noqa: ASYNC110
                "SELECT invocation_id, outcome, event_type, script FROM tail_logs"
                " WHERE message = $1", SLOW_LINE,
            )):  # fmt: skip
                await asyncio.sleep(0.1)
        invocation = line["invocation_id"]
        state = await db.fetchval(
            "SELECT state::text FROM stream_invocations WHERE invocation_id = $1", invocation
        )
        rows = await _count(
            db, "SELECT count(*) FROM tail_events WHERE extra->>'invocationId' = $1", invocation
        )
    finally:
        await db.close()
    return {**dict(line), "state": state, "rows": rows, "holding": receiver.holding}


# ---------------------------------------------------------------- the run
@dataclass
class Reposted:
    envelopes: int
    requests: int
    statuses: Counter[int]


@dataclass(repr=False)
class Run:
    """What the runtime delivered and what PostgreSQL held, before and after the redelivery."""

    statuses: dict[str, int]
    captured: dict[str, list[dict[str, Any]]]
    """Each script's envelopes as the capture Worker posted them."""
    held: dict[str, Any]
    first: Snapshot
    reposted: Reposted
    again: Snapshot
    metrics_first: dict[str, float]
    metrics: dict[str, float]
    runtime_log: str
    timings: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:  # pytest prints it with every failure: keep it to one line
        return f"Run({len(self.invocations())} reported, {len(self.first.events)} stored)"

    def envelopes(self) -> list[dict[str, Any]]:
        return [e for events in self.captured.values() for e in events]

    def invocations(self) -> dict[str, tuple[str, list[dict[str, Any]]]]:
        """invocationId -> (its script, its envelopes in sequence order)."""
        found: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for script, events in self.captured.items():
            for e in events:
                found.setdefault(e["invocationId"], (script, []))[1].append(e)
        for _, events in found.values():
            events.sort(key=lambda e: e["sequence"])
        return found

    def invocation(self, script: str, path: str) -> tuple[str, list[dict[str, Any]]]:
        [found] = [(i, es) for i, (s, es) in self.invocations().items()
                   if trigger(s, es) == (script, "fetch", path)]  # fmt: skip
        return found


def onset_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    onsets: list[dict[str, Any]] = [e["event"] for e in events if e["event"]["type"] == "onset"]
    [onset] = onsets
    return onset


def trigger(script: str, events: list[dict[str, Any]]) -> Trigger:
    info = onset_of(events).get("info") or {}
    url = info.get("url")
    return script, info.get("type", "unknown"), urlsplit(url).path if url else None


def drive(rt: Runtime) -> dict[str, int]:
    """Every route of the producer once, in order, the scheduled handler and /bigint; each with
    secrets in its URL and headers. The status of each answer."""
    statuses = {}
    with httpx.Client(timeout=30) as client:

        def get(base: str, path: str) -> int:
            url = f"{base}{path}?api_key={QUERY_SECRET}&page=2"
            return client.get(url, headers=HEADERS).status_code

        for path in ROUTES:
            statuses[path] = get(rt.producer, path)
        statuses["scheduled"] = client.get(rt.driver, params={"cron": CRON}).status_code
        statuses["/bigint"] = get(rt.marks, "/bigint")
    return statuses


def hold_slow(rt: Runtime, receiver: Receiver, settings: Settings) -> tuple[int, dict[str, Any]]:
    """/slow, held open until its first line is stored; its status and what was stored then."""
    status: list[int] = []

    def slow() -> None:
        with httpx.Client(timeout=HOLD_S + 30) as client:
            url = f"{rt.marks}/slow?api_key={QUERY_SECRET}&page=2"
            status.append(client.get(url, headers=HEADERS).status_code)

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        held = asyncio.run(while_held(settings, receiver))
    finally:
        receiver.released.set()
        thread.join(HOLD_S + 30)
    return (status[0] if status else 0), held


def repost(collect: str, captured: dict[str, list[dict[str, Any]]]) -> Reposted:
    """Every captured envelope posted to the collector again, REPOST_EVENTS a request, each
    under its script, the requests in reverse order: a forwarder's retry batched otherwise."""
    requests = [
        (script, events[start : start + REPOST_EVENTS])
        for script, events in captured.items()
        for start in range(0, len(events), REPOST_EVENTS)
    ][::-1]
    statuses: Counter[int] = Counter()
    with httpx.Client(timeout=30) as client:
        for script, events in requests:
            answer = client.post(
                f"{collect}{ROUTE}", params={"script": script},
                content=json.dumps(events).encode(),  # a lone surrogate stays an escape
                headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            )  # fmt: skip
            statuses[answer.status_code] += 1
    return Reposted(sum(len(events) for _, events in requests), len(requests), statuses)


DUPLICATES = 'tailpipe_duplicates_total{kind="event"}'
CLOSED = "tailpipe_stream_invocations_closed_total"


def exercise(settings: Settings, logs: Path, started: float) -> Run:
    """Start a replica, the collector, the receiver and workerd; drive every route; hold /slow;
    once everything is stored, post it all again. Every process is stopped before this
    returns, whatever happens."""
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 2)

    async def settled(invocations: int, duplicates: Callable[[], bool] | None = None) -> None:
        db = await connect(settings)
        try:
            if not await _settled(db, settings, invocations, duplicates):
                timings["gave_up_waiting"] = time.monotonic() - started
        finally:
            await db.close()

    with (
        replica(settings, logs) as watched,
        receiving() as (receiver, receiver_url),
        collector(env_of(settings), TOKEN, logs) as tail_url,
    ):
        collect = tail_url.removesuffix("/v1/tail")
        with runtime(collect, receiver_url, logs) as rt:
            lap("started_s")
            statuses = drive(rt)
            statuses["/slow"], held = hold_slow(rt, receiver, settings)
            lap("driven_s")
            wanted = sum(EXPECTED.values())
            wait_for(lambda: receiver.outcomes() >= wanted, DEADLINE_S, "every outcome captured")
            lap("reported_s")
            asyncio.run(settled(wanted))
            runtime_log = rt.log()
        captured = receiver.snapshot()
        (logs / "captured.json").write_text(json.dumps(captured, indent=2))
        first = asyncio.run(snapshot(settings))
        metrics_first = watched.replica.scrape()
        lap("stored_s")
        reposted = repost(collect, captured)
        before = metrics_first.get(DUPLICATES, 0.0)

        def counted() -> bool:
            return watched.replica.scrape().get(DUPLICATES, 0.0) >= before + reposted.envelopes

        asyncio.run(settled(wanted, counted))
        again = asyncio.run(snapshot(settings))
        metrics = watched.replica.scrape()
        lap("redelivered_s")
    lap("wall_s")
    return Run(statuses, captured, held, first, reposted, again, metrics_first, metrics,
               runtime_log, timings)  # fmt: skip


@pytest.fixture(scope="module")
def run(base_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Run]:
    workerd_binary()  # before the clock starts: a first install is not the test
    started = time.monotonic()
    with scratch(base_settings, "workerd-stream-test") as (settings, logs):
        result = exercise(settings, logs, started)
        summary = report(result, logs)
        yield result
        show(request, "streaming tails end to end", summary, logs)


def report(result: Run, logs: Path) -> dict[str, Any]:
    """The run's numbers, also written to .local/workerd-stream-test/summary.json."""
    envelopes = result.envelopes()
    summary = {
        "invocations_reported": len(result.invocations()),
        "invocations_stored": len(result.first.events),
        "events_reported": len(envelopes),
        "lines_reported": sum(1 for e in envelopes if e["event"]["type"] in LINES),
        "lines_stored": len(result.first.logs),
        "spans_stored": len(result.first.spans),
        "kafka_messages": result.first.messages,
        "reposted_envelopes": result.reposted.envelopes,
        "reposted_requests": result.reposted.requests,
        "kafka_messages_after_repost": result.again.messages,
        "duplicates_before_repost": result.metrics_first.get(DUPLICATES, 0.0),
        "duplicates": result.metrics.get(DUPLICATES, 0.0),
        "invocations_after_repost": len(result.again.events),
        "lines_after_repost": len(result.again.logs),
        "spans_after_repost": len(result.again.spans),
        "closed_by_outcome": result.metrics.get(f'{CLOSED}{{how="outcome"}}', 0.0),
        "open_at_end": result.again.open,
        "dead_letters": result.again.dead_letters,
        "rollups": result.first.rollups,
        "rollups_after_repost": result.again.rollups,
        **result.timings,
    }
    (logs / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def ms_of(timestamp: Any) -> int:
    """An envelope's timestamp (ISO, as the runtime serialises a Date) in epoch ms."""
    if isinstance(timestamp, int | float):
        return int(timestamp)
    return round(datetime.fromisoformat(timestamp).timestamp() * 1000)


def _rounded(ms: float | None) -> int | None:
    return None if ms is None else round(ms)


def level_of(event: dict[str, Any]) -> str:
    """The tail_logs level of a line event."""
    if event["type"] == "exception":
        return "exception"
    if event["type"] == "diagnosticChannel":
        return "debug"
    return "warn" if event["level"] == "warning" else str(event["level"])


# ---------------------------------------------------------------- the runtime did its part
def test_the_runtime_delivered_every_invocation_whole(run: Run) -> None:
    """What the other tests compare with: every invocation reported once, each numbered from 0
    without a gap, onset first and outcome last; and the forwarders logged no refusal."""
    assert run.statuses == STATUSES
    invocations = run.invocations()
    assert Counter(trigger(s, es) for s, es in invocations.values()) == EXPECTED
    for invocation, (_, events) in invocations.items():
        assert [e["sequence"] for e in events] == list(range(len(events))), invocation
        assert events[0]["event"]["type"] == "onset", invocation
        assert events[-1]["event"]["type"] == "outcome", invocation
    assert "tail-stream-forwarder:" not in run.runtime_log  # nothing refused or given up


# ---------------------------------------------------------------- 1. stored whole, exactly once
def test_every_invocation_is_stored_exactly_once_as_the_runtime_ended_it(run: Run) -> None:
    """One tail_events row per invocation the runtime reported (by its invocationId), with
    source 'stream', the forwarder's TAILPIPE_SCRIPT, its trigger, time and URL from the onset,
    its outcome and times from the outcome, its status from the return (none without one),
    its counts of lines and exceptions, and the events the runtime said it dropped."""
    reported = run.invocations()
    stored = Counter(row["invocation_id"] for row in run.first.events)
    once = Counter(list(reported))
    assert stored == once, {"missing": once - stored, "extra": stored - once}
    mismatches = []
    for row in run.first.events:
        if row["invocation_id"] not in reported:
            continue  # named above
        script, events = reported[row["invocation_id"]]
        onset = onset_of(events)
        returns = [(e["event"].get("info") or {}).get("statusCode") for e in events
                   if e["event"]["type"] == "return"]  # fmt: skip
        types = Counter(e["event"]["type"] for e in events)
        dropped = sum(e["event"]["diagnostic"].get("count", 0) for e in events
                      if e["event"]["type"] == "streamDiagnostic")  # fmt: skip
        want = {
            "source": "stream",
            "script": script,
            "event_type": TRIGGERS[onset["info"]["type"]],
            "path": trigger(script, events)[2],
            "ms": ms_of(events[0]["timestamp"]),
            "outcome": events[-1]["event"]["outcome"],
            "cpu_ms": _rounded(events[-1]["event"].get("cpuTime")),
            "wall_ms": _rounded(events[-1]["event"].get("wallTime")),
            "status": returns[0] if returns else None,
            "log_count": types["log"] + types["diagnosticChannel"],
            "exception_count": types["exception"],
            "dropped": dropped,
        }
        extra = orjson.loads(row["extra_text"])
        got = {
            **{k: row[k] for k in want if k in row},
            "path": urlsplit(row["url"]).path if row["url"] else None,
            "dropped": extra.get("droppedEvents", 0),
        }
        if got != want:
            mismatches.append((row["invocation_id"], got, want))
    assert mismatches == []
    assert run.first.rollups["requests"] == len(reported)  # counted once, too


def test_spans_are_stored_once_their_invocation_is_whole(run: Run) -> None:
    """Each span the runtime opened and closed (the Durable Object's subrequest and alarm
    setting, /slow's fetch of the hold) is one tail_spans row under its script."""
    reported: Counter[tuple[str, str, str, str]] = Counter()
    for script, events in run.invocations().values():
        opened = {e["event"]["spanId"]: e for e in events if e["event"]["type"] == "spanOpen"}
        for e in events:
            if e["event"]["type"] != "spanClose":
                continue
            span = e["spanContext"]["spanId"]
            if span in opened:
                trace = opened[span]["spanContext"]["traceId"]
                reported[(script, opened[span]["event"]["name"], trace, span)] += 1
    stored = Counter((r["script"], r["name"], r["trace"], r["span"]) for r in run.first.spans)
    assert reported, "the runtime reported no span: nothing checked"
    assert stored == reported, {"missing": reported - stored, "extra": stored - reported}


# ---------------------------------------------------------------- 2. every line, once, safe
def test_every_line_is_stored_once_under_its_invocation(run: Run) -> None:
    """Each log, exception and diagnostics-channel event is one tail_logs row naming its
    invocation, at its time, with its level; in its invocation's script and trigger (the onset
    comes first), and its outcome once it is known ('unreported' while it was not)."""
    reported: Counter[tuple[str, int, str, int]] = Counter()
    texts: Counter[tuple[str, int, str]] = Counter()
    context: dict[str, set[tuple[str, str, str]]] = {}
    for invocation, (script, events) in run.invocations().items():
        event_type = TRIGGERS[onset_of(events)["info"]["type"]]
        outcome = events[-1]["event"]["outcome"]
        context[invocation] = {(script, event_type, outcome), (script, event_type, "unreported")}
        for e in events:
            event = e["event"]
            if event["type"] not in LINES:
                continue
            reported[(invocation, e["sequence"], level_of(event), ms_of(e["timestamp"]))] += 1
            message = event.get("message")
            if event["type"] == "log" and all(isinstance(part, str) for part in message):
                texts[(invocation, e["sequence"], " ".join(message))] += 1
    stored = Counter((r["invocation_id"], r["seq"], r["level"], r["ms"]) for r in run.first.logs)
    assert stored == reported, {"missing": reported - stored, "extra": stored - reported}
    assert run.first.rollups["lines"] == reported.total()  # counted once, too
    out_of_context = [
        (r["invocation_id"], r["seq"], r["script"], r["event_type"], r["outcome"])
        for r in run.first.logs
        if (r["script"], r["event_type"], r["outcome"]) not in context.get(r["invocation_id"], ())
    ]
    assert out_of_context == []
    # Lines of plain strings come back as logged, but those with a secret (redacted) or a NUL
    # or a lone surrogate (made storable): tests/test_workerd.py checks those forms.
    secret_or_odd = [
        key for key in texts if any(s in key[2] for s in SECRETS.values()) or
        any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in key[2])
    ]  # fmt: skip
    for key in secret_or_odd:
        del texts[key]
    by_seq = Counter((r["invocation_id"], r["seq"], r["message"]) for r in run.first.logs)
    assert texts - by_seq == Counter()
    # BigInts reach a streaming tail as BigInts: the forwarder writes them as decimal strings.
    [channel] = [r for r in run.first.logs if r["kind"] == "diagnostic_channel"]
    assert orjson.loads(channel["data_text"]) == {"channel": "tailpipe.test", "message": BIGINTS}
    assert (channel["script"], channel["message"]) == (MARKS, "tailpipe.test")


def test_no_planted_secret_is_stored(run: Run) -> None:
    """The secrets sent in every request's URL and headers (and those /secrets logs) are in
    what the runtime delivered, and nowhere in PostgreSQL: not in tail_events' url or extra,
    not in tail_logs or tail_spans, nor in the state /slow waited in."""
    delivered = json.dumps(run.captured)
    assert [name for name, s in SECRETS.items() if s not in delivered] == []
    stored = [*run.first.texts, *run.again.texts, run.held["state"] or ""]
    leaked = {name: sum(s in text for text in stored) for name, s in SECRETS.items()}
    assert {name: n for name, n in leaked.items() if n} == {}
    # ... and what carried them is stored, redacted, not dropped.
    for row in run.first.events:
        if row["event_type"] != "fetch" or row["url"] == "http://do/arm":
            continue  # the Durable Object's fetch: its caller sent no secret
        assert "api_key=" in row["url"], row["url"]
        headers = orjson.loads(row["extra_text"])["headers"]
        assert {"authorization", "cookie", "x-api-key"} <= set(headers), headers
    invocation, _ = run.invocation(PRODUCER, "/secrets")
    lines = [r for r in run.first.logs if r["invocation_id"] == invocation]
    assert len(lines) == 5
    assert all("[REDACTED" in r["message"] for r in lines)


# ---------------------------------------------------------------- 3. long invocations
def test_a_long_invocation_reaches_postgresql_once_with_all_its_lines(run: Run) -> None:
    """/bulk: 300 lines of 1 KB, posted 100 events at a time, so in several Kafka messages;
    one row, every line."""
    invocation, events = run.invocation(PRODUCER, "/bulk")
    rows = [r for r in run.first.events if r["invocation_id"] == invocation]
    assert len(rows) == 1
    assert (rows[0]["log_count"], rows[0]["outcome"], rows[0]["status"]) == (BULK_LINES, "ok", 200)
    lines = [r for r in run.first.logs if r["invocation_id"] == invocation]
    told = [e["sequence"] for e in events if e["event"]["type"] == "log"]
    assert len(told) == BULK_LINES
    assert sorted(r["seq"] for r in lines) == told
    # producer.js's KB(n): a kilobyte each, numbered.
    kilobytes = {f"bulk line {n:03d} " + "x" * (1024 - 15) for n in range(BULK_LINES)}
    assert sorted(r["message"] for r in lines) == sorted(kilobytes)
    messages = {(r["kafka_partition"], r["kafka_offset"]) for r in lines}
    assert len(messages) >= 3, "/bulk's lines came in fewer messages than the forwarder's posts"


def test_an_open_invocations_lines_are_stored_before_it_ends(run: Run) -> None:
    """/slow is held open until its first line is stored: the line is there, with its trigger
    and `unreported`, while the invocation has no row and waits in stream_invocations; it ends,
    and is then stored once, whole."""
    invocation, events = run.invocation(MARKS, "/slow")
    held = run.held
    assert held["holding"] == 1, "the invocation was not held open when its line was read"
    assert (held["invocation_id"], held["outcome"]) == (invocation, "unreported")
    assert (held["event_type"], held["script"]) == ("fetch", MARKS)
    assert held["rows"] == 0
    assert held["state"] is not None, "the open invocation was not waiting in stream_invocations"
    rows = [r for r in run.first.events if r["invocation_id"] == invocation]
    assert [(r["outcome"], r["status"]) for r in rows] == [("ok", 200)]
    lines = [r for r in run.first.logs if r["invocation_id"] == invocation]
    told = [e["sequence"] for e in events if e["event"]["type"] in LINES]
    assert sorted(r["seq"] for r in lines) == told
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in lines}) == 2


# ---------------------------------------------------------------- 4. a redelivery stores nothing
def test_a_redelivery_batched_otherwise_stores_nothing_new(run: Run) -> None:
    """Every envelope posted again (REPOST_EVENTS a request, the requests in reverse order):
    the collector takes and publishes them, the replica stores the messages, and each event
    is a duplicate by its (invocationId, sequence): no row, no line, no span, no count more."""
    reposted, first, again = run.reposted, run.first, run.again
    assert reposted.envelopes == len(run.envelopes())
    assert reposted.statuses == Counter({202: reposted.requests})
    assert again.messages > first.messages, "the collector published nothing"
    assert again.stored == again.messages, "the replica did not store every message"
    counts = (len(again.events), len(again.logs), len(again.spans))
    assert counts == (len(first.events), len(first.logs), len(first.spans))
    duplicates = run.metrics.get(DUPLICATES, 0.0) - run.metrics_first.get(DUPLICATES, 0.0)
    assert duplicates == reposted.envelopes
    assert (first.dead_letters, again.dead_letters) == (0, 0)
    # Nor is anything counted again: the rollups are as before, and still those of the rows.
    assert again.rollups == first.rollups
    assert (first.rollups_unlike_rows, again.rollups_unlike_rows) == (None, None)


# ---------------------------------------------------------------- 5. nothing left open
def test_no_invocation_is_left_open(run: Run) -> None:
    """Every invocation ended by its outcome (none by the timeout): stream_invocations is
    empty, before the redelivery and after it."""
    assert (run.first.open, run.again.open) == (0, 0)
    assert run.metrics.get(f'{CLOSED}{{how="outcome"}}') == len(run.invocations())
    assert run.metrics.get(f'{CLOSED}{{how="timeout"}}', 0.0) == 0


def test_the_run_takes_well_under_a_minute(run: Run) -> None:
    """Its numbers are in .local/workerd-stream-test/summary.json and on the terminal."""
    assert run.timings["wall_s"] < 60
