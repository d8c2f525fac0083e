"""The real Workers runtime, end to end (issue 16): what workerd emits is stored whole.

The pinned `workerd` from npm serves tests/workerd/workerd.capnp: a producer Worker whose routes
log what real Workers log (strings, objects, JSON, Error objects, U+0000, Unicode, 300 lines of
1 KB, secrets, LLM usage, rate limits), throw, reject inside `waitUntil` and answer several
statuses; a Durable Object alarm and a scheduled handler. Its tails are the project's own
tail-forwarder, unchanged, posting to a real `tailpipe collect`, and a capture Worker posting to
this test, which so learns exactly what the runtime reported. One `tailpipe run` replica stores
the topic in PostgreSQL.

Everything runs once per module (the `run` fixture); each test then checks one promise against
that snapshot, so a broken promise fails alone. The run's logs, the captured trace items and a
summary (invocations reported and stored, log rows, dead letters, sanitized values, extracted
usage, wall time) are written to .local/workerd-test/.
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
from tests.conftest import env_of
from tests.support.workers import (
    Capture,
    collector,
    replica,
    scratch,
    show,
    stored_rows,
    wait_for,
    workerd,
    workerd_binary,
)

# Its module fixtures start services against the local stack.
pytestmark = pytest.mark.stack

TOKEN = "collect-" + uuid.uuid4().hex
"""The forwarder's TAILPIPE_TOKEN, one of the collector's TAILPIPE_COLLECT_TOKENS."""

# Sent with every request to the producer: secrets in the URL and in headers.
QUERY_SECRET = "qs-7d41c0a9e3b25f68wd"
HEADER_SECRET = "hdr-5e2a9c1b7f30d846wd"
COOKIE_SECRET = "ck-93b1e7a04d6c25f8wd"
XKEY_SECRET = "xk-0c8f3a6e1b9d4725wd"
HEADERS = {
    "authorization": f"Bearer {HEADER_SECRET}",
    "cookie": f"session={COOKIE_SECRET}",
    "x-api-key": XKEY_SECRET,
}
SECRETS = {
    "query parameter api_key": QUERY_SECRET,
    "authorization header": HEADER_SECRET,
    "cookie header": COOKIE_SECRET,
    "x-api-key header": XKEY_SECRET,
    # Logged by producer.js (/secrets): the same values are written there.
    "GitHub token": "ghp_R3alT0kenValue0123456789abcdefABCDwd",
    "bearer token in text": "9f8e7d6c5b4a39281706f5e4d3c2b1a0wd",
    "AWS access key id": "AKIAQ7WORKERDTEST123",
    "postgres URL password": "s3cr3t-Pa55word-wd",
    "api_key object field": "k-4f1c9a7e2b8d6035wd",
}

ROUTES = {
    "/strings": 200,
    "/objects": 200,
    "/numbers": 200,
    "/json": 200,
    "/logged-errors": 200,
    "/nul": 200,
    "/unicode": 200,
    "/bulk": 200,
    "/secrets": 200,
    "/llm": 200,
    "/ratelimit-headers": 200,  # before /ratelimit: GitHub's newest reading must be /ratelimit's
    "/ratelimit": 200,
    "/throw": 500,
    "/throw-custom": 500,
    "/wait-reject": 200,
    "/not-found": 404,
    "/server-error": 500,
    "/alarm": 200,  # the Durable Object's fetch (/arm) and, 50 ms later, its alarm
}
"""The producer's routes, driven in this order, and the status each answers."""
CRON = "*/5 * * * *"
EXPECTED: Counter[tuple[str, str | None]] = Counter(
    [*(("fetch", path) for path in ROUTES), ("fetch", "/arm"), ("alarm", None), ("scheduled", None)]
)
"""What the runtime must report: one invocation per route, the object's fetch and alarm, and
the scheduled run. (The driver Worker that fires `scheduled` is not tailed.)"""

LLM_USAGE = {
    # model: (tokens in, tokens out) as producer.js logs them (/llm)
    "claude-sonnet-4-5-20250929": (1200, 340),  # Anthropic Messages, object argument
    "gpt-4o-mini-2024-07-18": (900, 120),  # OpenAI Chat Completions, JSON string
    "gpt-5-mini-2025-08-07": (500, 60),  # OpenAI Responses, object argument
    "gemini-2.5-flash": (700, 80),  # Google generateContent (`modelVersion`), JSON string
}
ANTHROPIC_CACHE_TOKENS = (100, 2000)  # cache_creation_input_tokens, cache_read_input_tokens
CONTROL_MODEL = "claude-haiku-4-5"
"""Logged in tailpipe's documented `{"event": "llm_usage", ...}` form, extracted before issue
16: if this one is missing, extraction as a whole is broken, not the new SDK forms."""
UNNAMED = "(unnamed)"
"""How a script without a name is stored (`pipeline.formats.invocation.UNNAMED`): workerd names
none."""

Key = tuple[str, int, str | None]
"""An invocation, told apart without a script name: (event type, event time ms, URL path)."""


@dataclass(repr=False)
class Run:
    """What the runtime reported and what PostgreSQL holds afterwards."""

    statuses: dict[str, int]
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

    def by_key(self) -> dict[Key, dict[str, Any]]:
        return {key_of(item): item for item in self.captured}

    def event(self, path: str) -> dict[str, Any]:
        [item] = [i for i in self.captured if describe(i) == ("fetch", path)]
        return item

    def logs_of(self, path: str) -> list[dict[str, Any]]:
        return [row for row in self.logs if row["key"] == key_of(self.event(path))]


def describe(item: dict[str, Any]) -> tuple[str, str | None]:
    """(event type, URL path) of a trace item, as the decoder will type it."""
    event = item.get("event") or {}
    if "request" in event:
        return "fetch", urlsplit(event["request"]["url"]).path
    if "cron" in event:
        return "scheduled", None
    if "scheduledTime" in event:
        return "alarm", None
    return "unknown", None


def key_of(item: dict[str, Any]) -> Key:
    event_type, path = describe(item)
    return event_type, int(item["eventTimestamp"]), path


def stored_key(row: dict[str, Any]) -> Key:
    url = row["url"]
    return row["event_type"], int(row["event_ms"]), urlsplit(url).path if url else None


def drive(producer: str, driver: str) -> dict[str, int]:
    """Every route once, in order, then the scheduled handler; the status of each answer."""
    statuses = {}
    with httpx.Client(timeout=30) as client:
        for path in ROUTES:
            url = f"{producer}{path}?api_key={QUERY_SECRET}&page=2"
            statuses[path] = client.get(url, headers=HEADERS).status_code
        scheduled = client.get(driver, params={"cron": CRON})
        assert scheduled.status_code == 200, scheduled.text
        statuses["scheduled"] = scheduled.status_code
    return statuses


def reported_all(capture: Capture) -> bool:
    seen = Counter(describe(item) for item in capture.snapshot())
    return all(seen[what] >= n for what, n in EXPECTED.items())


def exercise(settings: Settings, binary: Path, logs: Path, started: float) -> Run:
    """Start a replica, the collector and workerd; drive every route; return what the runtime
    reported and, once all of it is stored, what PostgreSQL holds. Every process is stopped
    before this returns, whatever happens."""
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = time.monotonic() - started

    with (
        replica(settings, logs) as watched,
        Capture() as capture,
        collector(env_of(settings), TOKEN, logs) as collect_url,
        workerd(binary, tailpipe_url=collect_url, tailpipe_token=TOKEN,
                capture_url=capture.url, logs=logs) as runtime,
    ):  # fmt: skip
        lap("started_s")
        statuses = drive(runtime.producer, runtime.driver)
        lap("driven_s")
        wait_for(lambda: reported_all(capture), 30, "every invocation reported")
        captured = capture.snapshot()
        lap("reported_s")
        (logs / "captured.json").write_text(json.dumps(captured, indent=2))
        rows = asyncio.run(stored_rows(settings, len(captured), stored_key))
        lap("stored_s")
    lap("wall_s")
    return Run(statuses, captured, sanitized=watched.sanitized, timings=timings, **rows)


@pytest.fixture(scope="module")
def run(base_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Run]:
    binary = workerd_binary()  # before the clock starts: a first install is not the test
    started = time.monotonic()
    with scratch(base_settings, "workerd-test") as (settings, logs):
        result = exercise(settings, binary, logs, started)
        summary = report(result, logs)
        yield result
        show(request, "workerd end to end", summary, logs)


def _plain(value: Any) -> Any:
    """A value as JSON can hold it: dates, times and decimals as text."""
    return value if value is None or isinstance(value, int | float | str) else str(value)


def report(result: Run, logs: Path) -> dict[str, Any]:
    """The numbers issue 16's closing note asks for, also written to
    .local/workerd-test/summary.json."""
    expected_rows = sum(len(i["logs"]) + len(i["exceptions"]) for i in result.captured)
    llm = [u for u in result.usage if u["model"] is not None]
    summary = {
        "invocations_reported": len(result.captured),
        "invocations_stored": len(result.events),
        "log_rows_reported": expected_rows,
        "log_rows_stored": len(result.logs),
        "dead_letters": result.dead_letters,
        "sanitized_values": result.sanitized,
        "api_usage_rows": [{k: _plain(v) for k, v in u.items()} for u in result.usage],
        "llm_calls": sum(u["calls"] for u in llm),
        "llm_tokens_in": sum(u["tokens_in"] for u in llm),
        "llm_tokens_out": sum(u["tokens_out"] for u in llm),
        **{k: round(v, 2) for k, v in result.timings.items()},
    }
    (logs / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


# ---------------------------------------------------------------- the runtime did its part
def test_the_runtime_reported_every_invocation_once(run: Run) -> None:
    assert run.statuses == {**ROUTES, "scheduled": 200}
    assert Counter(describe(item) for item in run.captured) == EXPECTED
    # Locally workerd names no script: the pipeline must cope with that (issue 16, item 3).
    assert {item["scriptName"] for item in run.captured} == {None}


# ---------------------------------------------------------------- stored whole, exactly once
def test_every_invocation_is_stored_exactly_once(run: Run) -> None:
    stored = Counter(stored_key(row) for row in run.events)
    reported = Counter(key_of(item) for item in run.captured)
    assert stored == reported, {"missing": reported - stored, "extra": stored - reported}


def test_each_invocation_keeps_its_outcome_status_and_counts(run: Run) -> None:
    reported = run.by_key()
    mismatches = []
    for row in run.events:
        item = reported.get(stored_key(row))
        if item is None:
            continue  # the exactly-once test names it
        want = {
            "outcome": item["outcome"],
            "status": ((item["event"] or {}).get("response") or {}).get("status"),
            "log_count": len(item["logs"]),
            "exception_count": len(item["exceptions"]),
            "truncated": item["truncated"],
        }
        got = {k: row[k] for k in want}
        if got != want:
            mismatches.append((stored_key(row), got, want))
    assert mismatches == []


def test_every_log_line_and_exception_is_stored_once(run: Run) -> None:
    reported: Counter[tuple[Key, str, int]] = Counter()
    for item in run.captured:
        reported.update((key_of(item), log["level"], log["timestamp"]) for log in item["logs"])
        reported.update((key_of(item), "exception", e["timestamp"]) for e in item["exceptions"])
    stored = Counter((row["key"], row["level"], row["ms"]) for row in run.logs)
    assert stored == reported, {"missing": reported - stored, "extra": stored - reported}


def test_nothing_is_dead_lettered(run: Run) -> None:
    assert run.dead_letters == 0


def test_text_is_stored_verbatim_unicode_included(run: Run) -> None:
    """Lines of plain strings (no NUL, no secret) come back exactly as logged: emoji, CJK, RTL,
    JSON strings, 1 KB lines, Error objects rendered by the runtime. (An exception's message is
    stored as `Name: message`: the error-name test checks those.)"""
    expected: Counter[tuple[Key, str, str]] = Counter()
    for item in run.captured:
        if describe(item)[1] in ("/secrets", "/nul"):
            continue
        for log in item["logs"]:
            if all(isinstance(part, str) for part in log["message"]):
                expected[(key_of(item), log["level"], " ".join(log["message"]))] += 1
    stored = Counter((row["key"], row["level"], row["message"]) for row in run.logs)
    assert expected - stored == Counter()
    unicode = {row["message"] for row in run.logs_of("/unicode")}
    assert unicode == {
        "emoji 🚀🎉👩‍💻 done",
        "CJK 漢字テスト 한국어",
        "RTL שלום עולם مرحبا بالعالم",
    }


def test_the_truncated_invocation_is_stored_with_the_runtime_marker(run: Run) -> None:
    bulk = run.event("/bulk")
    assert bulk["truncated"] is True
    assert bulk["logs"][-1]["message"][0].startswith("Log size limit exceeded")
    rows = run.logs_of("/bulk")
    assert len(rows) == len(bulk["logs"])
    assert rows[-1]["level"] == "warn"
    assert rows[-1]["message"].startswith("Log size limit exceeded")


# ---------------------------------------------------------------- made storable and safe
def test_nul_and_a_lone_surrogate_are_stored_as_the_replacement_character(run: Run) -> None:
    """U+0000 (which PostgreSQL's text and jsonb refuse) and a string cut inside an emoji (a
    lone surrogate, which strict JSON parsers refuse) become U+FFFD, and the invocation is
    stored rather than dead-lettered (issue 16, item 1)."""
    rows = run.logs_of("/nul")
    assert len(rows) == 3, "the invocation with a NUL was not stored"
    text, obj, cut = rows
    assert text["message"] == "before\ufffdafter nul"
    assert orjson.loads(obj["data"]) == {"field": "nul\ufffdinside an object"}
    # The text of an object argument is its JSON, where the NUL stays written as an escape.
    assert obj["message"] == '{"field":"nul\\u0000inside an object"}'
    assert cut["message"] == "cut \ufffd"
    # tailpipe_sanitized_total: the line's text, the object's data, the cut line's text.
    assert run.sanitized == 3


def test_no_planted_secret_is_stored(run: Run) -> None:
    leaked = {name: sum(secret in text for text in run.row_texts)
              for name, secret in SECRETS.items()}  # fmt: skip
    assert {name: n for name, n in leaked.items() if n} == {}
    # ... and the lines that carried them are stored, redacted, not dropped.
    secrets_route = run.logs_of("/secrets")
    assert len(secrets_route) == 5
    assert all("[REDACTED" in row["message"] for row in secrets_route)


def test_a_script_without_a_name_is_stored_as_unnamed(run: Run) -> None:
    assert {row["script"] for row in run.events} == {UNNAMED}
    assert {row["script"] for row in run.logs} == {UNNAMED}


# ---------------------------------------------------------------- understood
def test_an_error_subclass_keeps_its_class_name(run: Run) -> None:
    """workerd reports `name: "Error"` for `class CustomError extends Error`; the class is in
    the stack's header line (`CustomError: ...`), which the pipeline is to read."""
    [custom] = [row for row in run.logs_of("/throw-custom") if row["level"] == "exception"]
    assert run.event("/throw-custom")["exceptions"][0]["name"] == "Error"  # what workerd says
    assert custom["exception_name"] == "CustomError"
    assert custom["message"] == "CustomError: uncaught custom error"
    [plain] = [row for row in run.logs_of("/throw") if row["level"] == "exception"]
    assert plain["exception_name"] == "Error"
    [rejected] = [row for row in run.logs_of("/wait-reject") if row["level"] == "exception"]
    assert rejected["exception_name"] == "Error"
    assert rejected["message"] == "Error: rejected inside waitUntil"


def test_rate_limit_readings_are_extracted(run: Run) -> None:
    [github] = [r for r in run.rate_limits if r["provider"] == "github"]
    # `github ratelimit remaining=4981` first, then `GitHub API rate limit remaining: 12`.
    assert github["remaining"] == 12, github
    # `x-ratelimit-remaining: 37`, a logged response header naming no provider: the
    # documented fallback provider. Readings are not calls.
    [unknown] = [r for r in run.rate_limits if r["provider"] == "unknown"]
    assert unknown["remaining"] == 37
    assert not [u for u in run.usage if u["provider"] == "unknown" and not u["calls"]]


def test_llm_usage_in_tailpipes_documented_form_is_extracted(run: Run) -> None:
    [control] = [u for u in run.usage if u["model"] == CONTROL_MODEL]
    assert (control["calls"], control["tokens_in"], control["tokens_out"]) == (1, 300, 30)
    assert control["cost_usd"] is not None  # priced in prices.toml


@pytest.mark.parametrize("model", list(LLM_USAGE))
def test_llm_usage_as_the_sdks_return_it_is_extracted(run: Run, model: str) -> None:
    tokens_in, tokens_out = LLM_USAGE[model]
    rows = [u for u in run.usage if u["model"] == model]
    assert len(rows) == 1, f"no api_calls_daily row for {model}: {run.usage}"
    [row] = rows
    assert (row["calls"], row["tokens_in"], row["tokens_out"]) == (1, tokens_in, tokens_out)
    if model.startswith("claude-"):  # input_tokens leave out the cache's, counted apart
        assert (row["cache_write_tokens"], row["cache_read_tokens"]) == ANTHROPIC_CACHE_TOKENS
        assert row["cost_usd"] is not None  # the shipped table prices Claude's cache tokens


def test_the_run_takes_well_under_two_minutes(run: Run) -> None:
    """Its numbers are in .local/workerd-test/summary.json and on the terminal."""
    assert run.timings["wall_s"] < 60
