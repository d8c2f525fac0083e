"""The real Workers runtime through `wrangler dev` (issue 16): what it reports is stored whole.

The pinned wrangler (deploy/local/wrangler/, installed by `stack.py wrangler`) runs three
Worker projects in one local runtime, as a user would wire them:

    wrangler dev -c producer/wrangler.toml -c tail-forwarder/wrangler.toml -c capture/wrangler.toml

tests/wrangler/producer names `tail_consumers = [{ service = "tail-forwarder" }, { service =
"capture" }]`; tail-forwarder is deploy/cloudflare/tail-forwarder, its wrangler.toml and
src/index.js copied byte for byte, with a `.dev.vars` (TAILPIPE_URL, TAILPIPE_TOKEN) pointing it
at a real `tailpipe collect`; capture is tests/workerd/capture.js, posting what the runtime
reported to this test. One `tailpipe run` replica stores the topic in PostgreSQL.

What wrangler adds to a Worker under `wrangler dev` with several configurations, and what this
test holds the pipeline to:
- its console middleware prepends the Worker's name, `[producer]`, as a first argument of every
  console.log, .info and .debug call (not .warn and .error); coloured, as on a terminal
  (FORCE_COLOR=1 here): "\\u001b[34m[producer]\\u001b[39m". The runtime names no script, so
  the decoder takes that name as the script's and the argument off the lines (colour codes and
  all); objects and JSON strings still become `data`.
- its error middleware catches an error thrown from `fetch` and answers a JSON 500 itself: the
  runtime reports outcome "ok", status 500 and no exception, so nothing downstream can store an
  exception for it. A rejection inside `waitUntil` is out of the middleware's reach and is
  reported, and stored, as an exception.

Everything runs once per module (the `run` fixture); each test checks one promise against that
snapshot. The run's logs, the captured trace items and a summary are written to
.local/wrangler-test/.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from pipeline.settings import Settings
from tests.conftest import ROOT, env_of
from tests.support.workers import (
    Capture,
    collector,
    replica,
    scratch,
    show,
    stored_rows,
    wait_for,
    worker_project,
    wrangler_dev,
    wrangler_entry,
)

# Its module fixtures start services against the local stack.
pytestmark = pytest.mark.stack

TOKEN = "collect-" + uuid.uuid4().hex
"""The forwarder's TAILPIPE_TOKEN (in its .dev.vars), one of the collector's tokens."""
FORWARDER = ROOT / "deploy" / "cloudflare" / "tail-forwarder"
ASSETS = ROOT / "tests" / "wrangler"

PREFIX = "\x1b[34m[producer]\x1b[39m"
"""What wrangler's console middleware prepends to log, info and debug lines (blue on a
terminal; with FORCE_COLOR=0 or no terminal it is the plain `[producer]`)."""

# Sent with every request to the producer: secrets in the URL and in headers.
QUERY_SECRET = "qs-2b7e91c04d6a3f58wr"
HEADER_SECRET = "hdr-8c1f5a9e2d70b463wr"
HEADERS = {"authorization": f"Bearer {HEADER_SECRET}"}
SECRETS = {
    "query parameter api_key": QUERY_SECRET,
    "authorization header": HEADER_SECRET,
    # Logged by producer/src/index.js (/secrets): the same values are written there.
    "GitHub token": "ghp_WrangL3rT0kenValue0123456789abcdefWR",
    "api_key object field": "k-7a2e9c4b1d8f6035wr",
    "postgres URL password": "s3cr3t-Wr4ngler-pw",
}

ROUTES = {
    "/levels": 200,
    "/json": 200,
    "/nul": 200,
    "/logged-errors": 200,
    "/secrets": 200,
    "/throw": 500,  # answered by wrangler's middleware
    "/wait-reject": 200,
}
"""The producer's routes, driven in this order, and the status each answers."""

Key = tuple[int, str]
"""An invocation, told apart without a script name: (event time ms, URL path)."""


@dataclass(repr=False)
class Run:
    """What the runtime reported and what PostgreSQL holds afterwards."""

    statuses: dict[str, int]
    bodies: dict[str, str]
    captured: list[dict[str, Any]]
    events: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    """tail_logs rows, each with `key`, its invocation's Key (None: no such invocation)."""
    usage: list[dict[str, Any]]
    """api_calls_daily rows."""
    rate_limits: list[dict[str, Any]]
    """rate_limit_readings_daily rows."""
    dead_letters: int
    row_texts: list[str]
    """Every tail_events and tail_logs row as PostgreSQL prints a row (jsonb included)."""
    sanitized: float
    timings: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:  # pytest prints it with every failure: keep it to one line
        return f"Run({len(self.captured)} reported, {len(self.events)} stored, {self.timings})"

    def item(self, path: str) -> dict[str, Any]:
        [item] = [i for i in self.captured if path_of(i) == path]
        return item

    def stored(self, path: str) -> dict[str, Any]:
        [row] = [r for r in self.events if stored_key(r) == key_of(self.item(path))]
        return row

    def logs_of(self, path: str) -> list[dict[str, Any]]:
        return [row for row in self.logs if row["key"] == key_of(self.item(path))]


def path_of(item: dict[str, Any]) -> str | None:
    request = (item.get("event") or {}).get("request")
    return urlsplit(request["url"]).path if request else None


def key_of(item: dict[str, Any]) -> Key:
    return int(item["eventTimestamp"]), path_of(item) or ""


def stored_key(row: dict[str, Any]) -> Key:
    return int(row["event_ms"]), urlsplit(row["url"]).path if row["url"] else ""


def drive(producer: str) -> tuple[dict[str, int], dict[str, str]]:
    """Every route once, in order; the status and body of each answer."""
    statuses, bodies = {}, {}
    with httpx.Client(timeout=30) as client:
        for path in ROUTES:
            url = f"{producer}{path}?api_key={QUERY_SECRET}&page=2"
            answer = client.get(url, headers=HEADERS)
            statuses[path], bodies[path] = answer.status_code, answer.text
    return statuses, bodies


def reported_all(capture: Capture) -> bool:
    seen = Counter(path_of(item) for item in capture.snapshot())
    return all(seen[path] >= 1 for path in ROUTES)


def projects(workers: Path, collect_url: str, capture_url: str) -> list[Path]:
    """The three Worker projects under `workers`; their wrangler.toml paths, producer first."""
    return [
        worker_project(workers / "producer", {
            "wrangler.toml": ASSETS / "producer" / "wrangler.toml",
            "src/index.js": ASSETS / "producer" / "src" / "index.js",
        }),
        # The forwarder unchanged; locally its URL and token come from .dev.vars, which
        # override the example URL of its [vars].
        worker_project(workers / "tail-forwarder", {
            "wrangler.toml": FORWARDER / "wrangler.toml",
            "src/index.js": FORWARDER / "src" / "index.js",
        }, {"TAILPIPE_URL": collect_url, "TAILPIPE_TOKEN": TOKEN}),
        worker_project(workers / "capture", {
            "wrangler.toml": ASSETS / "capture" / "wrangler.toml",
            "capture.js": ROOT / "tests" / "workerd" / "capture.js",
        }, {"CAPTURE_URL": capture_url}),
    ]  # fmt: skip


def exercise(settings: Settings, entry: Path, logs: Path, started: float) -> Run:
    """Start a replica, the collector and `wrangler dev`; drive every route; return what the
    runtime reported and, once all of it is stored, what PostgreSQL holds. Every process is
    stopped before this returns, whatever happens."""
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = time.monotonic() - started

    with (
        replica(settings, logs) as watched,
        Capture() as capture,
        collector(env_of(settings), TOKEN, logs) as collect_url,
        wrangler_dev(entry, projects(logs / "workers", collect_url, capture.url),
                     logs=logs, env={"FORCE_COLOR": "1"}) as producer,
    ):  # fmt: skip
        lap("started_s")
        statuses, bodies = drive(producer)
        lap("driven_s")
        answers = {path: [statuses[path], bodies[path][:300]] for path in ROUTES}
        (logs / "answers.json").write_bytes(orjson.dumps(answers, option=orjson.OPT_INDENT_2))
        wait_for(lambda: reported_all(capture), 30, "every invocation reported")
        captured = capture.snapshot()
        lap("reported_s")
        (logs / "captured.json").write_text(json.dumps(captured, indent=2))
        rows = asyncio.run(stored_rows(settings, len(captured), stored_key))
        lap("stored_s")
    lap("wall_s")
    return Run(statuses, bodies, captured, sanitized=watched.sanitized, timings=timings, **rows)


@pytest.fixture(scope="module")
def run(base_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Run]:
    entry = wrangler_entry()  # before the clock starts: a first install is not the test
    started = time.monotonic()
    with scratch(base_settings, "wrangler-test") as (settings, logs):
        result = exercise(settings, entry, logs, started)
        summary = report(result, logs)
        yield result
        show(request, "wrangler dev end to end", summary, logs)


def report(result: Run, logs: Path) -> dict[str, Any]:
    """The run in numbers, also written to .local/wrangler-test/summary.json."""
    summary = {
        "invocations_reported": len(result.captured),
        "invocations_stored": len(result.events),
        "log_rows_reported": sum(len(i["logs"]) + len(i["exceptions"]) for i in result.captured),
        "log_rows_stored": len(result.logs),
        "dead_letters": result.dead_letters,
        "sanitized_values": result.sanitized,
        **{k: round(v, 2) for k, v in result.timings.items()},
    }
    (logs / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


# ---------------------------------------------------------------- what wrangler dev reports
def test_wrangler_dev_reported_every_invocation_once(run: Run) -> None:
    assert run.statuses == ROUTES
    assert Counter(path_of(item) for item in run.captured) == Counter(list(ROUTES))
    assert {item["scriptName"] for item in run.captured} == {None}  # as plain workerd


def test_wrangler_prefixes_log_info_and_debug_with_the_worker_name(run: Run) -> None:
    messages = {log["level"]: log["message"] for log in run.item("/levels")["logs"]}
    assert messages == {
        "log": [PREFIX, "plain log line"],
        "info": [PREFIX, "info line"],
        "warn": ["warn line"],
        "error": ["error line"],
        "debug": [PREFIX, "debug line"],
    }


def test_wrangler_answers_a_thrown_fetch_error_itself(run: Run) -> None:
    """Its middleware catches the error and answers 500 (which wrangler's proxy turns into an
    HTML error page): the runtime sees a 500 response, not an exception."""
    assert "uncaught plain error" in run.bodies["/throw"]
    thrown = run.item("/throw")
    assert (thrown["outcome"], thrown["exceptions"]) == ("ok", [])
    assert thrown["event"]["response"]["status"] == 500


# ---------------------------------------------------------------- stored whole, exactly once
def test_every_invocation_is_stored_exactly_once(run: Run) -> None:
    stored = Counter(stored_key(row) for row in run.events)
    reported = Counter(key_of(item) for item in run.captured)
    assert stored == reported, {"missing": reported - stored, "extra": stored - reported}


def test_every_log_line_and_exception_is_stored_once(run: Run) -> None:
    reported: Counter[tuple[Key, str, int]] = Counter()
    for item in run.captured:
        reported.update((key_of(item), log["level"], log["timestamp"]) for log in item["logs"])
        reported.update((key_of(item), "exception", e["timestamp"]) for e in item["exceptions"])
    stored = Counter((row["key"], row["level"], row["ms"]) for row in run.logs)
    assert stored == reported, {"missing": reported - stored, "extra": stored - reported}


def test_nothing_is_dead_lettered(run: Run) -> None:
    assert run.dead_letters == 0


def test_wrapped_lines_are_stored_as_logged_under_the_workers_name(run: Run) -> None:
    """A line of strings is stored as its arguments join, without wrangler's name prefix, which
    names the script instead (it was stored at the start of every line, with its colour codes,
    under `(unnamed)`)."""
    expected: Counter[tuple[Key, str, str]] = Counter()
    for item in run.captured:
        if path_of(item) in ("/secrets", "/nul"):
            continue
        for log in item["logs"]:
            parts = log["message"]
            if all(isinstance(part, str) for part in parts):
                text = " ".join(parts[1:] if parts[0] == PREFIX else parts)
                expected[(key_of(item), log["level"], text)] += 1
    stored = Counter((row["key"], row["level"], row["message"]) for row in run.logs)
    assert expected - stored == Counter()
    levels = {row["level"]: row["message"] for row in run.logs_of("/levels")}
    assert levels["log"] == "plain log line"
    assert levels["warn"] == "warn line"
    assert {row["script"] for row in run.events} == {"producer"}
    assert {row["script"] for row in run.logs} == {"producer"}


def test_objects_and_json_strings_behind_the_prefix_are_data(run: Run) -> None:
    rows = run.logs_of("/json")
    order, routing = rows[0], rows[1]
    assert order["message"] == '{"event":"order_created","order":1234,"total":99.5}'
    assert orjson.loads(order["data"]) == {"event": "order_created", "order": 1234, "total": 99.5}
    assert orjson.loads(routing["data"]) == {"path": "/v1/chat", "nested": {"a": [1, 2]}}


def test_usage_and_rate_limits_behind_the_prefix_are_extracted(run: Run) -> None:
    [llm] = [u for u in run.usage if u["model"] == "claude-haiku-4-5"]
    assert (llm["calls"], llm["tokens_in"], llm["tokens_out"]) == (1, 300, 30)
    github = [r for r in run.rate_limits if r["provider"] == "github"]
    assert 12 in {r["remaining"] for r in github}, run.rate_limits


# ---------------------------------------------------------------- made storable and safe
def test_nul_is_stored_as_the_replacement_character(run: Run) -> None:
    rows = run.logs_of("/nul")
    assert [row["message"] for row in rows] == [
        "before\ufffdafter nul",
        "error\ufffdwith nul",
    ]
    assert run.sanitized >= 2  # tailpipe_sanitized_total


def test_no_planted_secret_is_stored(run: Run) -> None:
    leaked = {name: sum(secret in text for text in run.row_texts)
              for name, secret in SECRETS.items()}  # fmt: skip
    assert {name: n for name, n in leaked.items() if n} == {}
    # ... and the lines that carried them are stored, redacted, not dropped.
    secrets_route = run.logs_of("/secrets")
    assert len(secrets_route) == 3
    assert all("[REDACTED" in row["message"] for row in secrets_route)


# ---------------------------------------------------------------- errors
def test_logged_errors_are_stored_as_rendered(run: Run) -> None:
    messages = [(row["level"], row["message"]) for row in run.logs_of("/logged-errors")]
    assert messages == [
        ("error", "Error: plain logged error"),
        ("log", "wrapped: TypeError: type logged error"),
    ]


def test_a_waituntil_rejection_is_stored_as_an_exception(run: Run) -> None:
    [reported] = run.item("/wait-reject")["exceptions"]
    assert (reported["name"], reported["message"]) == ("Error", "rejected inside waitUntil")
    [row] = [r for r in run.logs_of("/wait-reject") if r["level"] == "exception"]
    assert row["exception_name"] == "Error"
    assert row["message"] == "Error: rejected inside waitUntil"
    assert row["fingerprint"]


def test_a_thrown_fetch_error_is_stored_as_the_runtime_reported_it(run: Run) -> None:
    """No exception row: the runtime reported none (see the wrangler test above); the
    invocation, its 500 and its log line are stored."""
    row = run.stored("/throw")
    assert (row["outcome"], row["status"], row["exception_count"]) == ("ok", 500, 0)
    assert [(r["level"], r["message"]) for r in run.logs_of("/throw")] == [
        ("log", "about to throw")
    ]


def test_the_run_takes_well_under_a_minute(run: Run) -> None:
    """Its numbers are in .local/wrangler-test/summary.json and on the terminal."""
    assert run.timings["wall_s"] < 60
