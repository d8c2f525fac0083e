"""The streaming Tail Worker forwarder under the real Workers runtime, alone.

The pinned `workerd` serves tests/workerd/stream-forward.capnp: the producer of
tests/test_workerd.py and a second one (stream-marks.js: BigInts in an event, an invocation that
outlasts the forwarder's flush delay), each streaming its events to the project's own
deploy/cloudflare/tail-stream-forwarder, unchanged, and to the capture Worker of
tests/workerd/stream.capnp, which tells this test what the runtime delivered. A small HTTP
server here stands in for `tailpipe collect`: it records every attempt the forwarder makes and
answers each as the test says (202, 503, 429, a dropped connection, 400). The way through the
real collector, Kafka and PostgreSQL is another test's.

What is checked: every envelope the runtime delivered arrives exactly once, each invocation's in
sequence order, as the runtime gave it but with BigInts as decimal strings, under the script
name the forwarder is configured with; an answer of 503, 429 or a lost connection is retried
until everything is taken; a 400 is logged and not retried. The runs' files are kept in
.local/workerd-stream-forwarder/.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.support.workers import (
    Process,
    http_server,
    listening,
    run_dir,
    wait_for,
    workerd_binary,
)
from tests.test_workerd import ROUTES

# It runs the pinned workerd, which the local stack's tools install.
pytestmark = pytest.mark.stack

CONFIG = ROOT / "tests" / "workerd" / "stream-forward.capnp"
TOKEN = "stream-" + uuid.uuid4().hex
ROUTE = "/v1/tail-stream"
SCRIPTS = {"producer": "producer", "marks": "stream-marks"}
"""Each producer's TAILPIPE_SCRIPT in stream-forward.capnp (its socket -> the name)."""
BURST = [path for _ in range(4) for path in ("/strings", "/objects", "/json", "/numbers")]
"""Requests sent at once, so the forwarder's buffer holds several invocations."""
BATCH_EVENTS = 100
"""The forwarder's default TAILPIPE_BATCH_EVENTS."""
HOLD_S = 20.0
"""Longest /hold keeps stream-marks' /slow waiting for its onset to be forwarded."""
BIGINTS = {"big": "9007199254740993", "nested": ["1", {"deeper": "-2"}]}
"""stream-marks.js's diagnostics-channel message, BigInts written as decimal strings."""


@dataclass(frozen=True)
class Answer:
    """What the stand-in collector answers one attempt: a status (None: the connection is
    dropped without an answer) and an optional Retry-After."""

    status: int | None
    retry_after: str | None = None


ACCEPT = Answer(202)
Plan = Callable[[int], Answer]
"""The answer to the forwarder's n-th attempt (1-based, every script's counted together)."""


@dataclass
class Attempt:
    n: int
    script: list[str]
    headers: dict[str, str]
    body: bytes
    answer: Answer
    at: float

    def events(self) -> list[dict[str, Any]]:
        # The standard library's parser keeps a lone surrogate escape, as the collector does.
        events: list[dict[str, Any]] = json.loads(self.body)
        return events


@dataclass
class Receiver:
    """The forwarder's collector (POST /v1/tail-stream), the capture Worker's server (POST
    /capture) and stream-marks' hold (GET /hold), in threads."""

    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    captured: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def accepted(self) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if a.answer.status == 202]

    def forwarded(self) -> list[dict[str, Any]]:
        """Every envelope of every accepted post, in the order they arrived."""
        return [event for attempt in self.accepted() for event in attempt.events()]

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.captured)

    def _attempt(self, script: list[str], headers: dict[str, str], body: bytes) -> Answer:
        with self.lock:
            n = len(self.attempts) + 1
            answer = self.plan(n)
            self.attempts.append(Attempt(n, script, headers, body, answer, time.monotonic()))
            self.lock.notify_all()
            return answer

    def _capture(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.captured.extend(events)

    def _hold(self) -> bool:
        """Whether the onset of stream-marks' /slow was forwarded, within HOLD_S."""

        def forwarded() -> bool:
            return any(
                path_of(e) == "/slow"
                for a in self.attempts
                if a.answer.status == 202
                for e in a.events()
            )

        with self.lock:
            return self.lock.wait_for(forwarded, HOLD_S)


@contextlib.contextmanager
def receiving(plan: Plan) -> Iterator[tuple[Receiver, str]]:
    """The receiver on a free loopback port; yields it and its base URL."""
    receiver = Receiver(plan)

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 with keep-alive, as the runtime's fetch expects (tests/support/workers.py).
        protocol_version = "HTTP/1.1"
        timeout = 60

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if url.path == "/capture":
                receiver._capture(json.loads(body))
                self._answer(204)
                return
            if url.path != ROUTE:
                self._answer(404)
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            script = parse_qs(url.query, keep_blank_values=True).get("script", [])
            answer = receiver._attempt(script, headers, body)
            if answer.status is None:
                self.close_connection = True  # no answer at all: the sender sees it lost
                return
            self._answer(answer.status, answer.retry_after)

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/hold":
                self._answer(200 if receiver._hold() else 504)
            else:
                self._answer(404)

        def _answer(self, status: int, retry_after: str | None = None) -> None:
            body = b"" if status == 204 else json.dumps({"status": status}).encode()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as url:
        yield receiver, url


@dataclass
class Runtime:
    process: Process
    producer: str
    marks: str

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@contextlib.contextmanager
def runtime(base: str, logs: Path) -> Iterator[Runtime]:
    """workerd on stream-forward.capnp, its forwarders and capture Worker posting to `base`."""
    producer, marks = free_port(), free_port()
    argv = [
        str(workerd_binary()), "serve", str(CONFIG), "config", "--verbose",
        "-s", f"producer=127.0.0.1:{producer}", "-s", f"marks=127.0.0.1:{marks}",
    ]  # fmt: skip
    env = {
        "TAILPIPE_URL": base,
        "TAILPIPE_TOKEN": TOKEN,
        "CAPTURE_URL": f"{base}/capture",
        "HOLD_URL": f"{base}/hold",
    }
    process = Process("workerd", argv, env, logs)
    try:
        process.wait_ready(lambda: listening(producer) and listening(marks), 30)
        yield Runtime(process, f"http://127.0.0.1:{producer}", f"http://127.0.0.1:{marks}")
    finally:
        process.stop()


def path_of(event: dict[str, Any]) -> str | None:
    """The URL path of an onset's request; None for another event, or another trigger."""
    url = event["event"].get("info", {}).get("url") if event["event"]["type"] == "onset" else None
    return None if url is None else urlsplit(url).path


def by_invocation(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        grouped[event["invocationId"]].append(event)
    return dict(grouped)


def outcomes(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events if e["event"]["type"] == "outcome")


def delivered(receiver: Receiver, invocations: int, forwarded: int | None = None) -> None:
    """Wait until the runtime delivered `invocations` outcomes to the capture Worker and the
    forwarder posted `forwarded` (as many by default). An outcome is an invocation's last
    event, in both streams."""
    wanted = invocations if forwarded is None else forwarded

    def done() -> bool:
        return (
            outcomes(receiver.snapshot()) >= invocations
            and outcomes(receiver.forwarded()) >= wanted
        )

    wait_for(done, 60, f"{invocations} invocations captured and {wanted} forwarded")


def get(client: httpx.Client, url: str) -> int:
    return client.get(url).status_code


def assert_forwarded_whole(receiver: Receiver, lost: frozenset[str] = frozenset()) -> None:
    """Every invocation the runtime delivered (but `lost`) arrived exactly once, whole, in
    sequence order, as delivered: nothing missing, repeated, reordered or changed."""
    captured = by_invocation(receiver.snapshot())
    forwarded = by_invocation(receiver.forwarded())
    assert set(forwarded) == set(captured) - lost
    for invocation, events in forwarded.items():
        assert events == captured[invocation], invocation
        assert [e["sequence"] for e in events] == list(range(len(events))), invocation
        assert events[0]["event"]["type"] == "onset"
        assert events[-1]["event"]["type"] == "outcome"


# -- every route, a burst and the marks: all arrives, once, in order ----------------------------


@dataclass
class Run:
    receiver: Receiver
    statuses: dict[str, int]
    log: str


@pytest.fixture(scope="module")
def run() -> Run:
    """One run of the runtime, stopped before the tests look at what it forwarded."""
    logs = run_dir("workerd-stream-forwarder/run")
    with receiving(lambda n: ACCEPT) as (receiver, base), runtime(base, logs) as workerd:
        statuses: dict[str, int] = {}
        with httpx.Client(timeout=30) as client:
            for path in ROUTES:
                statuses[path] = get(client, workerd.producer + path)
            with ThreadPoolExecutor(len(BURST)) as pool:
                burst = list(pool.map(lambda p: get(client, workerd.producer + p), BURST))
            assert burst == [200] * len(BURST)
            for path in ("/bigint", "/slow"):
                statuses[path] = get(client, workerd.marks + path)
        # Every route, the Durable Object's fetch and alarm, the burst, the marks.
        delivered(receiver, len(ROUTES) + 2 + len(BURST) + 2)
        log = workerd.log()
    return Run(receiver, statuses, log)


def test_every_event_arrives_once_per_invocation_in_sequence_order(run: Run) -> None:
    assert run.statuses == {**ROUTES, "/bigint": 200, "/slow": 200}
    assert_forwarded_whole(run.receiver)
    assert len(by_invocation(run.receiver.forwarded())) == len(ROUTES) + 2 + len(BURST) + 2
    assert "tail-stream-forwarder:" not in run.log  # nothing refused, dropped or given up


def test_posts_name_the_configured_script_and_carry_the_token(run: Run) -> None:
    """The runtime names no script locally: each post says the forwarder's TAILPIPE_SCRIPT,
    and every post of an invocation the same one."""
    script_of: dict[str, set[str]] = defaultdict(set)
    for attempt in run.receiver.attempts:
        assert attempt.headers["authorization"] == f"Bearer {TOKEN}"
        assert attempt.headers["content-type"].startswith("application/json")
        assert len(attempt.script) == 1, attempt.script
        assert 1 <= len(attempt.events()) <= BATCH_EVENTS
        for event in attempt.events():
            assert "scriptName" not in event["event"]
            script_of[event["invocationId"]].add(attempt.script[0])
    paths = {
        script: {path_of(e) for e in onsets}
        for script, onsets in _onsets_by_script(run.receiver.forwarded(), script_of).items()
    }
    assert paths["stream-marks"] == {"/bigint", "/slow"}
    assert paths["producer"] == {*ROUTES, "/arm", None}  # None: the alarm's onset
    assert all(len(names) == 1 for names in script_of.values())
    assert {name for names in script_of.values() for name in names} == set(SCRIPTS.values())


def _onsets_by_script(
    events: list[dict[str, Any]], script_of: dict[str, set[str]]
) -> dict[str, list[dict[str, Any]]]:
    found: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["event"]["type"] == "onset":
            [script] = script_of[event["invocationId"]]
            found[script].append(event)
    return dict(found)


def test_bigints_arrive_as_decimal_strings(run: Run) -> None:
    [channel] = [e for e in run.receiver.forwarded() if e["event"]["type"] == "diagnosticChannel"]
    assert channel["event"] == {
        "type": "diagnosticChannel",
        "channel": "tailpipe.test",
        "message": BIGINTS,
    }


def test_a_large_invocation_spans_several_posts_in_order(run: Run) -> None:
    """/bulk's 303 events: posted TAILPIPE_BATCH_EVENTS at a time, chained, so in order."""
    [bulk] = [e["invocationId"] for e in run.receiver.forwarded() if path_of(e) == "/bulk"]
    posts = [
        a for a in run.receiver.accepted() if any(e["invocationId"] == bulk for e in a.events())
    ]
    assert len(posts) >= 4
    assert [a.n for a in posts] == sorted(a.n for a in posts)


def test_a_long_invocation_is_posted_before_its_outcome(run: Run) -> None:
    """/slow ends only once its onset reached the receiver: the forwarder posted it on its
    timer (TAILPIPE_FLUSH_MS), not at the outcome."""
    assert run.statuses["/slow"] == 200
    [slow] = [e["invocationId"] for e in run.receiver.forwarded() if path_of(e) == "/slow"]
    holding = [
        [e["event"]["type"] for e in a.events() if e["invocationId"] == slow]
        for a in run.receiver.accepted()
    ]
    holding = [types for types in holding if types]
    assert len(holding) >= 2
    assert holding[0][0] == "onset"
    assert "outcome" not in holding[0]
    assert holding[-1][-1] == "outcome"


# -- a collector in trouble ----------------------------------------------------------------------


def test_503_429_and_lost_connections_are_retried_until_everything_arrives() -> None:
    """The first post is refused with 503 (Retry-After: 1), then 429, then its connection is
    dropped: the same body is sent again each time, the wait honours Retry-After, the posts
    after it wait their turn, and everything arrives once, in order."""
    answers = {1: Answer(503, "1"), 2: Answer(429), 3: Answer(None), 4: Answer(502)}
    logs = run_dir("workerd-stream-forwarder/retries")
    with (
        receiving(lambda n: answers.get(n, ACCEPT)) as (receiver, base),
        runtime(base, logs) as workerd,
    ):
        with httpx.Client(timeout=30) as client:
            paths = ["/strings", "/bulk", "/objects", "/throw"]
            statuses = [get(client, workerd.producer + path) for path in paths]
        assert statuses == [200, 200, 200, 500]
        delivered(receiver, len(paths))
        log = workerd.log()
    first = receiver.attempts[:5]
    assert [a.answer.status for a in first] == [503, 429, None, 502, 202]
    assert len({a.body for a in first}) == 1, "a retry sent another body"
    assert first[1].at - first[0].at >= 1.0, "Retry-After: 1 was not waited for"
    assert_forwarded_whole(receiver)
    assert "tail-stream-forwarder:" not in log


def test_a_refusal_is_logged_and_not_retried() -> None:
    """A 400 (the collector found the events bad) cannot be fixed by sending them again: those
    events are dropped with a console.error, and the posts after it go on."""
    logs = run_dir("workerd-stream-forwarder/refusal")
    with (
        receiving(lambda n: Answer(400) if n == 1 else ACCEPT) as (receiver, base),
        runtime(base, logs) as workerd,
    ):
        with httpx.Client(timeout=30) as client:
            assert get(client, workerd.producer + "/strings") == 200
            wait_for(lambda: "collector refused" in workerd.log(), 30, "the refusal logged")
            assert get(client, workerd.producer + "/objects") == 200
        delivered(receiver, 2, forwarded=1)  # /strings refused, /objects taken
        log = workerd.log()
    refused = receiver.attempts[0]
    assert refused.answer.status == 400
    assert [a.body for a in receiver.attempts].count(refused.body) == 1
    lost = {e["invocationId"] for e in refused.events()}
    assert_forwarded_whole(receiver, frozenset(lost))
    [line] = [line for line in log.splitlines() if "tail-stream-forwarder:" in line]
    assert f"collector refused {len(refused.events())} events: 400" in line
