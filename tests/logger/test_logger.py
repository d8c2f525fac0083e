"""The structured logger: records, context, levels, typed records, the stdlib handler, jobs,
limits, processors, redaction, and that it never raises into the application."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pipeline.formats.identity import value_key
from pipeline.logger import Logger, StreamPublisher, TailpipeHandler, tailpipe_logger
from pipeline.logger.entry import Entry
from tests.conftest import ROOT
from tests.logger.test_envelope import Captured, captured_logger, validate

GH_TOKEN = "ghp_" + "Zx81" * 9
PASSWORD = "hunter2-Qq9"
API_KEY = "k3y-V4lue-881"


def test_standalone_record_shape() -> None:
    log, captured = captured_logger("billing")
    log.info("worker started")
    item = captured.only()
    assert item["scriptName"] == "billing"
    assert item["event"] == {"log": {}}
    assert item["outcome"] == "ok"
    assert item["wallTime"] == 0
    assert item["truncated"] is False
    assert item["exceptions"] == []
    (entry,) = item["logs"]
    assert entry == {
        "timestamp": item["eventTimestamp"],
        "level": "info",
        "message": ["worker started"],
    }
    # Keyed by identity, like `tailpipe produce` and the collector: the digest of the one
    # serialisation the logger will ever send of this record.
    assert captured.keys == [value_key(captured.values[0])]


def test_bind_merges_context_and_leaves_the_parent_alone() -> None:
    base, captured = captured_logger()
    log = base.bind(request_id="req_1", repo="acme/api")
    child = log.bind(repo="acme/web", step=2)
    log.info("one", files=3)
    child.info("two", repo="override")
    child.unbind("step", "request_id").info("three")
    base.info("four")
    contexts = [item["logs"][0].get("context") for item in captured.items]
    assert contexts == [
        {"request_id": "req_1", "repo": "acme/api", "files": 3},
        {"request_id": "req_1", "repo": "override", "step": 2},
        {"repo": "acme/web"},
        None,  # omitted when empty
    ]
    assert log.context == {"request_id": "req_1", "repo": "acme/api"}


def test_levels_and_threshold() -> None:
    log, captured = captured_logger()
    log.debug("d")
    log.info("i")
    log.log("l")
    log.warn("w")
    log.warning("w2")
    log.error("e")
    assert [item["logs"][0]["level"] for item in captured.items] == [
        "debug",
        "info",
        "log",
        "warn",
        "warn",
        "error",
    ]
    quiet, captured = captured_logger(level="warn")
    quiet.debug("d")
    quiet.info("i")
    quiet.warn("w")
    assert [item["logs"][0]["message"] for item in captured.items] == [["w"]]
    with pytest.raises(ValueError, match="level"):
        tailpipe_logger("x", level="verbose")


def test_message_formatting() -> None:
    log, captured = captured_logger()
    log.info("user %s opened #%d", "alice", 7)
    log.info({"not": "a string"})
    log.info("bad %d format", "x")
    assert [item["logs"][0]["message"][0] for item in captured.items] == [
        "user alice opened #7",
        "{'not': 'a string'}",
        "bad %d format x",
    ]


def test_context_values_that_are_not_json() -> None:
    import datetime
    import uuid

    log, captured = captured_logger()
    when = datetime.datetime(2026, 1, 1, 3, 0, tzinfo=datetime.UTC)
    log.info("x", at=when, id=uuid.UUID(int=1), tags={"a"}, pair=(1, 2), raw=b"bytes")
    context = captured.only()["logs"][0]["context"]
    assert context == {
        "at": "2026-01-01T03:00:00+00:00",
        "id": "00000000-0000-0000-0000-000000000001",
        "tags": ["a"],
        "pair": [1, 2],
        "raw": "bytes",
    }


def test_api_call_record() -> None:
    log, captured = captured_logger()
    log.api_call(
        "anthropic",
        "/v1/messages",
        model="claude-sonnet-4-5",
        status=200,
        duration_ms=201.7,
        tokens_in=1834,
        tokens_out=412,
        rate_limit_remaining=49,
        request_id="req_9",
    )
    log.api_call("github", "/repos/{owner}/{repo}", status=429, duration_ms=12)
    log.api_call("github", "/search", status=502, duration_ms=30000)
    log.api_call("openai", "/v1/chat", status=0, level="info", message="connection reset")
    first, *rest = captured.items
    entry = first["logs"][0]
    assert entry["record"] == {
        "type": "api_call",
        "provider": "anthropic",
        "endpoint": "/v1/messages",
        "model": "claude-sonnet-4-5",
        "status": 200,
        "duration_ms": 201.7,
        "tokens_in": 1834,
        "tokens_out": 412,
        "rate_limit_remaining": 49,
    }
    assert entry["context"] == {"request_id": "req_9"}
    assert entry["level"] == "info"
    assert entry["message"] == ["anthropic /v1/messages 200 in 202ms"]
    assert [item["logs"][0]["level"] for item in rest] == ["warn", "error", "info"]
    assert rest[0]["logs"][0]["record"]["model"] is None  # unknown fields are explicit nulls
    assert rest[2]["logs"][0]["message"] == ["connection reset"]


def test_scan_record() -> None:
    log, captured = captured_logger()
    log.scan("acme/infra", 3912, "failed", 61000.5, run_id="r1", level="warn")
    entry = captured.only()["logs"][0]
    assert entry["record"] == {
        "type": "scan",
        "repo": "acme/infra",
        "files": 3912,
        "status": "failed",
        "duration_ms": 61000.5,
    }
    assert entry["level"] == "warn"
    assert entry["context"] == {"run_id": "r1"}


def _timers(captured: Captured) -> list[dict[str, Any]]:
    return [entry for item in captured.items for entry in item["logs"] if "record" in entry]


def test_timer_as_context_manager_and_decorator() -> None:
    log, captured = captured_logger()
    with log.timer("clone", repo="acme/api") as timer:
        sum(range(1000))
    assert timer.duration_ms is not None
    assert timer.duration_ms >= 0

    @log.timer("parse")
    def parse(text: str) -> int:
        return len(text)

    assert parse("abc") == 3
    assert parse.__name__ == "parse"
    entries = _timers(captured)
    assert [e["record"]["name"] for e in entries] == ["clone", "parse"]
    assert all(e["record"]["type"] == "timer" and e["level"] == "debug" for e in entries)
    assert all(isinstance(e["record"]["duration_ms"], float | int) for e in entries)
    assert entries[0]["context"] == {"repo": "acme/api"}


async def test_timer_async_forms_and_concurrency() -> None:
    log, captured = captured_logger()

    @log.timer("fetch")
    async def fetch(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    assert list(await asyncio.gather(fetch(0.05), fetch(0.0))) == [0.05, 0.0]
    async with log.timer("block"):
        await asyncio.sleep(0.01)
    entries = _timers(captured)
    durations = {e["record"]["duration_ms"] for e in entries if e["record"]["name"] == "fetch"}
    # Concurrent calls each time themselves: one ~0 ms, one ~50 ms.
    assert min(durations) < 40 <= max(durations)
    assert [e["record"]["name"] for e in entries][-1] == "block"


def test_timer_records_even_when_the_work_raises() -> None:
    log, captured = captured_logger()
    timer = log.timer("step")
    with pytest.raises(RuntimeError), timer:
        raise RuntimeError("x")

    @log.timer("fails")
    def fails() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        fails()
    entries = _timers(captured)
    assert [(e["record"]["name"], e["context"]) for e in entries] == [
        ("step", {"error": "RuntimeError"}),
        ("fails", {"error": "KeyError"}),
    ]
    # Re-entering the same timer object nests correctly.
    with timer, timer:
        pass
    assert len(_timers(captured)) == 4


def test_exception_entries() -> None:
    log, captured = captured_logger()

    def explode() -> None:
        raise ValueError("bad value 42")

    try:
        explode()
    except ValueError:
        log.exception("could not parse", path="/x")
    error = OSError("disk full")
    log.error("write failed", exc_info=error)
    log.error("no active exception", exc_info=True)
    first, second, third = captured.items
    assert first["logs"][0]["level"] == "error"
    assert first["logs"][0]["context"] == {"path": "/x"}
    (exc,) = first["exceptions"]
    assert exc["name"] == "ValueError"
    assert exc["message"] == "bad value 42"
    assert "in explode" in exc["stack"]
    assert 'raise ValueError("bad value 42")' in exc["stack"]
    assert exc["timestamp"] == first["logs"][0]["timestamp"]
    assert second["exceptions"][0]["name"] == "OSError"
    assert "stack" not in second["exceptions"][0]  # never raised: no frames
    assert third["exceptions"] == []


# --- the stdlib handler -----------------------------------------------------------------------


@pytest.fixture
def stdlib() -> Iterator[tuple[logging.Logger, Captured, Logger]]:
    log, captured = captured_logger()
    handler = TailpipeHandler(log)
    target = logging.getLogger("tests.app")
    target.setLevel(1)
    target.addHandler(handler)
    try:
        yield target, captured, log
    finally:
        target.removeHandler(handler)


def test_stdlib_logging_is_captured(stdlib: tuple[logging.Logger, Captured, Logger]) -> None:
    target, captured, _ = stdlib
    target.debug("d %s", "arg")
    target.info("i", extra={"request_id": "req_3"})
    target.warning("w")
    target.error("e")
    target.critical("c")
    target.log(5, "below debug")
    items = captured.items
    assert [item["logs"][0]["level"] for item in items] == [
        "debug",
        "info",
        "warn",
        "error",
        "error",
        "debug",
    ]
    assert items[0]["logs"][0]["message"] == ["d arg"]
    assert items[0]["logs"][0]["context"] == {"logger": "tests.app"}
    assert items[1]["logs"][0]["context"] == {"logger": "tests.app", "request_id": "req_3"}


def test_stdlib_exc_info_becomes_an_exception(
    stdlib: tuple[logging.Logger, Captured, Logger],
) -> None:
    target, captured, _ = stdlib
    try:
        empty: dict[str, int] = {}
        empty["missing"]
    except KeyError:
        target.exception("lookup failed")
    item = captured.only()
    assert item["logs"][0]["level"] == "error"
    (exc,) = item["exceptions"]
    assert exc["name"] == "KeyError"
    assert exc["message"] == "'missing'"
    assert "test_stdlib_exc_info_becomes_an_exception" in exc["stack"]


def test_stdlib_records_join_the_job(stdlib: tuple[logging.Logger, Captured, Logger]) -> None:
    target, captured, log = stdlib
    with log.job("sync-job"):
        target.info("from logging")
        log.info("from tailpipe")
    item = captured.only()
    assert [entry["message"][0] for entry in item["logs"]] == ["from logging", "from tailpipe"]


def test_handler_skips_aiokafka_and_its_own_reentry() -> None:
    log, captured = captured_logger()
    handler = TailpipeHandler(log)
    kafka_logger = logging.getLogger("aiokafka.producer")
    kafka_logger.addHandler(handler)
    try:
        kafka_logger.error("broker down")
    finally:
        kafka_logger.removeHandler(handler)
    assert captured.values == []

    # A processor that logs through stdlib while the handler is busy: no loop, one record.
    looped = logging.getLogger("tests.loop")

    def noisy(entry: Entry) -> Entry:
        looped.warning("inside a processor")
        return entry

    log2, captured2 = captured_logger(processors=[noisy])
    handler2 = TailpipeHandler(log2)
    looped.addHandler(handler2)
    try:
        looped.warning("outer")
    finally:
        looped.removeHandler(handler2)
    assert [item["logs"][0]["message"] for item in captured2.items] == [["outer"]]


# --- redaction --------------------------------------------------------------------------------


def _leaky() -> None:
    # The traceback shows this source line, secret and all: the stack is redacted too.
    raise ValueError("bad key ghp_Zx81Zx81Zx81Zx81Zx81Zx81Zx81Zx81Zx81")


def test_secrets_never_reach_the_publisher() -> None:
    log, captured = captured_logger()
    bound = log.bind(api_key=API_KEY, note=f"token {GH_TOKEN}")
    bound.info(f"cloning https://x-access-token:{GH_TOKEN}@github.com/acme/api.git")
    bound.warn("retry", url=f"https://api.example.com/v1?page=2&password={PASSWORD}")
    bound.info("headers", headers={"Authorization": f"Bearer {GH_TOKEN}", "accept": "*/*"})
    bound.api_call("example", f"https://api.example.com/v1/items?key={API_KEY}", status=200)
    with pytest.raises(RuntimeError), bound.job("sync", dsn=f"postgres://u:{PASSWORD}@db/x"):
        raise RuntimeError(f"login failed with password={PASSWORD}")
    try:
        _leaky()
    except ValueError:
        bound.exception("failed")

    raw = b"\n".join(captured.values)
    for secret in (GH_TOKEN, PASSWORD, API_KEY):
        assert secret.encode() not in raw
    items = captured.items
    assert items[0]["logs"][0]["context"]["api_key"] == "[REDACTED:field]"
    assert "page=2&password=[REDACTED:query]" in items[1]["logs"][0]["context"]["url"]
    assert items[2]["logs"][0]["context"]["headers"] == {
        "Authorization": "[REDACTED:field]",
        "accept": "*/*",
    }
    assert items[3]["logs"][0]["record"]["endpoint"].endswith("?key=[REDACTED:query]")
    assert items[4]["event"]["job"]["dsn"] == "postgres://u:[REDACTED:userinfo]@db/x"
    assert items[4]["exceptions"][0]["message"] == "login failed with password=[REDACTED:kv]"
    stack = items[5]["exceptions"][0]["stack"]
    assert 'raise ValueError("bad key [REDACTED:github]")' in stack
    assert log.redactions["github"] >= 3
    assert log.redactions["field"] >= 5


def test_a_processor_cannot_bypass_redaction() -> None:
    def add_secret(entry: Entry) -> Entry:
        entry["context"] = {**entry.get("context", {}), "password": PASSWORD}
        entry["message"] = [entry["message"][0] + f" {GH_TOKEN}"]
        return entry

    log, captured = captured_logger(processors=[add_secret])
    log.info("hello")
    raw = captured.values[0]
    assert PASSWORD.encode() not in raw
    assert GH_TOKEN.encode() not in raw


# --- processors and failures --------------------------------------------------------------


def test_processors_transform_and_drop() -> None:
    def add_host(entry: Entry) -> Entry:
        entry["context"] = {**entry.get("context", {}), "host": "web-1"}
        return entry

    def drop_debug(entry: Entry) -> Entry | None:
        return None if entry["level"] == "debug" else entry

    log, captured = captured_logger(processors=[drop_debug, add_host])
    bound = log.bind(a=1)
    bound.debug("dropped")
    bound.info("kept")
    assert [item["logs"][0] for item in captured.items] == [
        {
            "timestamp": captured.items[0]["logs"][0]["timestamp"],
            "level": "info",
            "message": ["kept"],
            "context": {"a": 1, "host": "web-1"},
        }
    ]
    assert bound.context == {"a": 1}  # the processor changed its copy only


def test_logging_never_raises_into_the_application() -> None:
    class Broken:
        def publish(self, value: bytes, key: bytes | None = None) -> None:
            raise OSError("publisher on fire")

    def bad_processor(entry: Entry) -> Entry:
        raise ZeroDivisionError

    log = tailpipe_logger("svc", publisher=Broken())
    log.info("one")
    with log.job("j"):
        log.info("two")
    assert log.errors == 2

    log2, captured = captured_logger(processors=[bad_processor])
    log2.info("lost")
    assert log2.errors == 1
    assert captured.values == []

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    log3, captured3 = captured_logger()
    log3.info(Unprintable(), thing=Unprintable())
    item = captured3.only()
    assert item["logs"][0]["message"] == ["<unprintable Unprintable>"]
    assert item["logs"][0]["context"] == {"thing": "<unprintable Unprintable>"}

    log4, captured4 = captured_logger()
    log4.info("reserved names", message="m", level="l", args=1)
    log4.api_call("p", "/e", status="n/a", duration_ms="slow")  # type: ignore[arg-type]
    log4.scan("acme/api", "many", "ok", "12")  # type: ignore[arg-type]
    first, second, third = captured4.items
    assert first["logs"][0]["context"] == {"message": "m", "level": "l", "args": 1}
    # A wrong-typed field is nulled (the decoder would refuse the item) and shown in context.
    entry = second["logs"][0]
    assert entry["message"] == ["p /e n/a in slowms"]
    assert entry["record"]["status"] is None
    assert entry["record"]["duration_ms"] is None
    assert entry["context"] == {"invalid_fields": {"status": "'n/a'", "duration_ms": "'slow'"}}
    assert third["logs"][0]["record"]["files"] is None
    assert third["logs"][0]["record"]["duration_ms"] == 12  # digits are read as a number
    assert third["logs"][0]["context"] == {"invalid_fields": {"files": "'many'"}}

    closed = io.StringIO()
    closed.close()
    stream = StreamPublisher(closed)
    tailpipe_logger("svc", publisher=stream).info("into a closed stream")
    assert stream.failed == 1


# --- jobs -------------------------------------------------------------------------------------


def test_job_collects_one_trace_item() -> None:
    log, captured = captured_logger("scanner")
    with log.job("nightly-scan", schedule="0 3 * * *", run_id="r1"):
        log.info("start")
        log.scan("acme/api", 10, "ok", 5.0)
        log.bind(step=2).warn("slow")
    item = captured.only()
    assert item["event"] == {
        "job": {"name": "nightly-scan", "schedule": "0 3 * * *", "run_id": "r1"}
    }
    assert item["outcome"] == "ok"
    assert next(entry["message"][0] for entry in item["logs"]) == "start"
    assert len(item["logs"]) == 3
    assert item["exceptions"] == []
    assert item["eventTimestamp"] <= item["logs"][0]["timestamp"]


def test_job_records_the_exception_once_and_re_raises() -> None:
    log, captured = captured_logger()

    @log.job("j")
    def job() -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("step failed")  # logged, then left to propagate
            raise

    with pytest.raises(ValueError, match="boom"):
        job()
    item = captured.only()
    assert item["outcome"] == "exception"
    (exc,) = item["exceptions"]  # not twice
    assert exc["name"] == "ValueError"
    assert exc["message"] == "boom"
    assert item["logs"][0]["level"] == "error"


async def test_async_job_and_decorators() -> None:
    log, captured = captured_logger()

    @log.job("hourly")
    async def hourly(n: int) -> int:
        await asyncio.sleep(0)
        log.info("tick", n=n)
        return n * 2

    @log.job("sync-cron")
    def cron() -> str:
        log.info("ran")
        return "done"

    assert list(await asyncio.gather(hourly(1), hourly(2))) == [2, 4]
    assert cron() == "done"
    items = captured.items
    assert len(items) == 3
    assert sorted(item["logs"][0]["context"]["n"] for item in items[:2]) == [1, 2]
    assert all(len(item["logs"]) == 1 for item in items)
    assert items[2]["event"]["job"]["name"] == "sync-cron"

    with pytest.raises(asyncio.CancelledError):
        async with log.job("cancelled"):
            raise asyncio.CancelledError
    assert captured.items[-1]["outcome"] == "canceled"


async def test_job_collects_from_child_tasks_and_threads() -> None:
    log, captured = captured_logger()
    async with log.job("fan-out"):
        await asyncio.gather(*(asyncio.to_thread(log.info, f"thread {i}") for i in range(3)))

        async def child() -> None:
            log.info("task")

        await asyncio.create_task(child())
        worker = threading.Thread(target=log.info, args=("plain thread",))
        worker.start()
        worker.join()
    items = captured.items
    # A plain Thread does not inherit the context: its record is published on its own.
    assert len(items) == 2
    job = next(item for item in items if "job" in item["event"])
    assert sorted(entry["message"][0] for entry in job["logs"]) == [
        "task",
        "thread 0",
        "thread 1",
        "thread 2",
    ]


async def test_records_after_the_job_ended_are_published_alone() -> None:
    log, captured = captured_logger()
    release = asyncio.Event()

    async def background() -> None:
        await release.wait()
        log.info("late")

    async with log.job("short"):
        task = asyncio.create_task(background())
    release.set()
    await task
    job, late = captured.items
    assert job["logs"] == []
    assert late["event"] == {"log": {}}
    assert late["logs"][0]["message"] == ["late"]


def test_nested_jobs_publish_separately() -> None:
    log, captured = captured_logger()
    with log.job("outer"):
        log.info("a")
        with log.job("inner"):
            log.info("b")
        log.info("c")
    inner, outer = captured.items
    assert [e["message"][0] for e in inner["logs"]] == ["b"]
    assert [e["message"][0] for e in outer["logs"]] == ["a", "c"]


# --- limits -----------------------------------------------------------------------------------


def test_line_limit_truncates_like_the_runtime() -> None:
    log, captured = captured_logger(max_lines=5)

    @log.job("chatty")
    def chatty() -> None:
        for i in range(50):
            log.info(f"line {i}")
        raise RuntimeError("the end")

    with pytest.raises(RuntimeError, match="the end"):
        chatty()
    item = captured.only()
    assert item["truncated"] is True
    assert len(item["logs"]) == 6
    marker = item["logs"][-1]
    assert marker["level"] == "warn"
    assert marker["message"][0].startswith("Log size limit exceeded")
    # The exception that ended the job is kept over the limit.
    assert item["exceptions"][0]["message"] == "the end"


def test_byte_limit_and_exception_limit() -> None:
    log, captured = captured_logger(max_bytes=4096)
    with log.job("big"):
        for _ in range(10):
            log.info("x" * 1000)
        for i in range(30):
            try:
                raise KeyError(i)
            except KeyError:
                log.exception("caught")
    item = captured.only()
    assert item["truncated"] is True
    assert len(orjson.dumps(item["logs"])) < 4096 + 1024
    messages = [e["message"] for e in item["exceptions"]]
    assert messages[-1] == "Trace resource limit exceeded; subsequent exceptions not recorded."
    assert len(messages) < 10
    from pipeline.formats.decode import decode

    (invocation,) = decode(captured.values[0])
    assert invocation.truncated


def test_a_standalone_record_over_the_limit_keeps_only_the_marker() -> None:
    log, captured = captured_logger(max_bytes=1024)
    log.info("y" * 5000)
    item = captured.only()
    assert item["truncated"] is True
    assert item["logs"][0]["message"][0].startswith("Log size limit exceeded")


# --- packaging --------------------------------------------------------------------------------


def test_importing_the_logger_pulls_in_neither_asyncpg_nor_aiobotocore() -> None:
    code = (
        "import sys\n"
        "import pipeline.logger\n"
        "from pipeline.logger import KafkaPublisher, tailpipe_logger\n"
        "import pipeline.kafka.clients  # what KafkaPublisher.start imports\n"
        "tailpipe_logger('x').info('hello')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('asyncpg', 'aiobotocore'))\n"
        "print('LOADED', bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    validate(orjson.loads(result.stdout.splitlines()[0]))
