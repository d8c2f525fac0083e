"""The logger's wire format: a validator for tailpipe envelopes, used by every logger test, and
checks that each kind of record the logger emits passes it and the pipeline's own decoder."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import orjson
import pytest

from pipeline.logger import Logger, StreamPublisher, tailpipe_logger

LEVELS = {"debug", "info", "log", "warn", "error"}
OUTCOMES = {"ok", "exception", "canceled"}
TOP = {
    "envelope",
    "scriptName",
    "eventTimestamp",
    "event",
    "outcome",
    "wallTime",
    "truncated",
    "logs",
    "exceptions",
}
OPTIONAL = {"scriptVersion", "scriptTags", "spanContext"}
"""Only when the logger has a release or an environment."""
NUMBER = (int, float)
# Typed fields may be null: the logger nulls a wrong-typed argument
# (see pipeline.logger.typed_records).
OPT_INT = (int, type(None))
OPT_NUMBER = (int, float, type(None))
OPT_STR = (str, type(None))
RECORDS: dict[str, dict[str, tuple[type, ...]]] = {
    "api_call": {
        "provider": OPT_STR,
        "endpoint": OPT_STR,
        "model": OPT_STR,
        "status": OPT_INT,
        "duration_ms": OPT_NUMBER,
        "tokens_in": OPT_INT,
        "tokens_out": OPT_INT,
        "rate_limit_remaining": OPT_INT,
    },
    "scan": {"repo": OPT_STR, "files": OPT_INT, "status": OPT_STR, "duration_ms": OPT_NUMBER},
    "timer": {"name": (str,), "duration_ms": NUMBER},
}
MIN_MS, MAX_MS = 946_684_800_000, 7_258_118_400_000
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(: |$)")


def _ms(value: Any, where: str) -> None:
    assert type(value) is int, f"{where}: epoch ms, got {value!r}"
    assert MIN_MS <= value < MAX_MS, f"{where}: epoch ms, got {value!r}"


def validate(item: Any) -> dict[str, Any]:
    """Assert that `item` is a well-formed envelope as the logger writes it; return it."""
    assert type(item) is dict, "an object"
    assert TOP <= set(item) <= TOP | OPTIONAL, f"top-level keys {sorted(set(item) ^ TOP)}"
    if "scriptVersion" in item:  # the release (`init`)
        assert set(item["scriptVersion"]) == {"tag"}
        assert type(item["scriptVersion"]["tag"]) is str
    if "scriptTags" in item:  # the environment (`init`)
        assert [tag.startswith("environment:") for tag in item["scriptTags"]] == [True]
    if "spanContext" in item:  # a request's or job's span, or the one a record was logged in
        span = item["spanContext"]
        assert {"traceId", "spanId"} <= set(span) <= {"traceId", "spanId", "parentSpanId"}
        assert re.fullmatch("[0-9a-f]{32}", span["traceId"]), span
        assert all(re.fullmatch("[0-9a-f]{16}", span[k]) for k in set(span) - {"traceId"}), span
    assert item["envelope"] == "tailpipe/1"
    assert type(item["scriptName"]) is str
    assert item["scriptName"]
    _ms(item["eventTimestamp"], "eventTimestamp")
    assert item["outcome"] in OUTCOMES
    assert "cpuTime" not in item  # not measured: absent, so it is stored NULL, not 0 ms
    assert type(item["wallTime"]) is int
    assert item["wallTime"] >= 0
    assert type(item["truncated"]) is bool
    _event(item["event"])
    assert type(item["logs"]) is list
    assert type(item["exceptions"]) is list
    for i, entry in enumerate(item["logs"]):
        _log(entry, f"logs[{i}]")
    for i, entry in enumerate(item["exceptions"]):
        _exception(entry, f"exceptions[{i}]")
    return item


def _event(event: Any) -> None:
    assert type(event) is dict
    if "request" in event:
        assert set(event) <= {"request", "response"}
        request = event["request"]
        assert set(request) == {"url", "method", "headers"}
        assert type(request["url"]) is str
        assert type(request["method"]) is str
        headers = request["headers"]
        assert type(headers) is dict
        for name, value in headers.items():
            assert name == name.lower()
            assert type(value) is str
        if "response" in event:
            assert set(event["response"]) == {"status"}
            assert type(event["response"]["status"]) is int
    elif "job" in event:
        assert set(event) == {"job"}
        assert type(event["job"]) is dict
        assert type(event["job"].get("name")) is str
        assert event["job"]["name"]
    else:
        assert event == {"log": {}}, f"unknown event {event!r}"


def _log(entry: Any, where: str) -> None:
    assert type(entry) is dict, where
    assert (
        {"timestamp", "level", "message"}
        <= set(entry)
        <= {
            "timestamp",
            "level",
            "message",
            "context",
            "record",
        }
    ), f"{where}: keys {sorted(entry)}"
    _ms(entry["timestamp"], f"{where}.timestamp")
    assert entry["level"] in LEVELS, f"{where}.level {entry['level']!r}"
    message = entry["message"]
    assert type(message) is list, where
    assert len(message) == 1, where
    assert type(message[0]) is str, where
    if "context" in entry:
        assert type(entry["context"]) is dict, f"{where}.context"
        assert entry["context"], f"{where}.context empty"
    if "record" in entry:
        record = entry["record"]
        assert type(record) is dict, f"{where}.record"
        assert record.get("type") in RECORDS, f"{where}.record.type"
        fields = RECORDS[record["type"]]
        assert set(record) == {"type", *fields}, f"{where}.record keys {sorted(record)}"
        for name, types in fields.items():
            value = record[name]
            assert isinstance(value, types), f"{where}.{name}"
            assert type(value) is not bool, f"{where}.{name}"


def _exception(entry: Any, where: str) -> None:
    assert type(entry) is dict, where
    assert (
        {"timestamp", "name", "message"}
        <= set(entry)
        <= {
            "timestamp",
            "name",
            "message",
            "stack",
        }
    ), where
    _ms(entry["timestamp"], f"{where}.timestamp")
    assert type(entry["name"]) is str, where
    assert entry["name"], where
    assert type(entry["message"]) is str, where
    if "stack" in entry:
        assert type(entry["stack"]) is str, where
        # Frames (`  File ...`), a collapsed run of them (`  [3 framework frames omitted]`), or
        # a chained exception that was never raised, its `Name: message` line alone.
        first = entry["stack"].split("\n", 1)[0]
        assert first.startswith(("  File ", "  [")) or _EXCEPTION_LINE.match(first), where


class Captured:
    """A publisher that keeps what it is given; `items` validates and decodes it."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.keys: list[bytes | None] = []

    def publish(self, value: bytes, key: bytes | None = None) -> None:
        self.values.append(value)
        self.keys.append(key)

    @property
    def items(self) -> list[dict[str, Any]]:
        return [validate(orjson.loads(value)) for value in self.values]

    def only(self) -> dict[str, Any]:
        items = self.items
        assert len(items) == 1, f"{len(items)} items published"
        return items[0]


def captured_logger(service: str = "billing", **options: Any) -> tuple[Logger, Captured]:
    """A logger into a `Captured`; at level debug unless told, so every record kind shows."""
    captured = Captured()
    options.setdefault("level", "debug")
    return tailpipe_logger(service, publisher=captured, **options), captured


# --- every kind of record the logger writes -------------------------------------------------


def emit_everything(log: Logger) -> None:
    """One of each record kind, standalone and inside a job, including an exception."""
    log.debug("d")
    log.info("i %s", 1, user="u_1")
    log.log("l")
    log.warn("w")
    log.warning("w2")
    log.error("e")
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("failed")
    log.api_call("github", "/repos/{owner}/{repo}", status=200, duration_ms=183, tokens_in=None)
    log.api_call(
        "anthropic",
        "/v1/messages",
        model="claude-sonnet-4-5",
        status=200,
        duration_ms=201.7,
        tokens_in=1834,
        tokens_out=412,
        rate_limit_remaining=49,
    )
    log.scan("acme/api", 3912, "ok", 61000)
    with log.timer("clone"):
        pass

    @log.job("nightly-scan", schedule="0 3 * * *")
    def nightly() -> None:
        log.info("in the job")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        nightly()


def test_every_record_kind_validates_and_the_pipeline_decodes_it() -> None:
    from pipeline.formats.decode import decode

    log, captured = captured_logger("repo-scanner")
    emit_everything(log)
    items = captured.items
    assert len(items) == 12
    kinds: list[str | None] = []
    for value in captured.values:
        (invocation,) = decode(value)
        assert invocation.source == "envelope"
        assert invocation.script == "repo-scanner"
        kinds.extend(line.kind for line in invocation.logs)
    assert kinds.count("api_call") == 2
    assert kinds.count("scan") == 1
    assert kinds.count("timer") == 1
    assert items[-1]["event"]["job"] == {"name": "nightly-scan", "schedule": "0 3 * * *"}
    assert log.errors == 0


def test_stream_publisher_writes_one_json_line_per_item() -> None:
    stream = io.StringIO()
    log = tailpipe_logger("billing", publisher=StreamPublisher(stream), level="debug")
    emit_everything(log)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 12
    for line in lines:
        validate(orjson.loads(line))


def test_default_publisher_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    tailpipe_logger("billing").info("to stdout")
    (line,) = capsys.readouterr().out.splitlines()
    item = validate(orjson.loads(line))
    assert item["logs"][0]["message"] == ["to stdout"]


def test_validator_rejects_malformed_items() -> None:
    log, captured = captured_logger()
    log.info("x")
    good = captured.only()
    for broken in (
        {**good, "envelope": "tailpipe/2"},
        {**good, "wallTime": 1.5},
        {k: v for k, v in good.items() if k != "outcome"},
        {**good, "logs": [{**good["logs"][0], "level": "warning"}]},
        {**good, "logs": [{**good["logs"][0], "context": {}}]},
        {**good, "logs": [{**good["logs"][0], "record": {"type": "timer", "name": "x"}}]},
        {**good, "event": {"job": {}}},
    ):
        with pytest.raises(AssertionError):
            validate(broken)


async def test_async_everything_validates() -> None:
    log, captured = captured_logger()

    @log.timer("fetch")
    async def fetch() -> int:
        await asyncio.sleep(0)
        return 7

    async with log.job("refresh"):
        assert await fetch() == 7
    item = captured.only()
    assert item["event"] == {"job": {"name": "refresh"}}
    assert item["logs"][0]["record"]["name"] == "fetch"
