"""structlog's event dicts through `TailpipeProcessor`, with the real structlog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

import pipeline.logger as tailpipe
from pipeline.logger import TailpipeProcessor, tailpipe_logger
from tests.logger.test_envelope import Captured

GH_TOKEN = "ghp_" + "Zx81" * 9


@pytest.fixture
def captured() -> Iterator[Captured]:
    captured = Captured()
    rendered: list[str] = []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt=None),
            TailpipeProcessor(tailpipe_logger("structured", publisher=captured)),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *args: structlog.PrintLogger(file=_Sink(rendered)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    yield captured
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    assert rendered, "the renderer after the processor still ran"


class _Sink:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        pass


def test_an_event_keeps_its_level_message_fields_and_time(captured: Captured) -> None:
    structlog.contextvars.bind_contextvars(request_id="req_7")
    structlog.get_logger().bind(repo="acme/api").warning("scan slow", files=12, token=GH_TOKEN)
    (item,) = captured.items
    (entry,) = item["logs"]
    assert entry["level"] == "warn"
    assert entry["message"] == ["scan slow"]
    assert entry["context"]["request_id"] == "req_7"
    assert entry["context"]["repo"] == "acme/api"
    assert entry["context"]["files"] == 12
    assert GH_TOKEN not in str(item)  # redacted like every other record
    assert abs(entry["timestamp"] - item["eventTimestamp"]) < 1_000


def test_exceptions_become_exception_entries(captured: Captured) -> None:
    try:
        {"present": 1}["missing"]
    except KeyError:
        structlog.get_logger().exception("lookup failed")
    (item,) = captured.items
    assert item["logs"][0]["level"] == "error"
    (exception,) = item["exceptions"]
    assert exception["name"] == "KeyError"


def test_debug_is_below_the_default_level(captured: Captured) -> None:
    structlog.get_logger().debug("noise")
    structlog.get_logger().info("kept")
    assert [item["logs"][0]["message"] for item in captured.items] == [["kept"]]


def test_the_default_logger_is_the_one_init_made() -> None:
    captured = Captured()
    tailpipe.init(service="structured-default", publisher=captured)
    try:
        event = {"event": "hello", "n": 1}
        assert TailpipeProcessor()(None, "info", event) is event  # the chain goes on
        (item,) = captured.items
        assert item["scriptName"] == "structured-default"
        assert item["logs"][0]["context"] == {"n": 1}
    finally:
        tailpipe.shutdown()
