"""The pipeline's own log lines: JSON objects with ts, level, event and the call's fields."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _emit(fmt: str, stream: io.StringIO) -> None:
    logs.configure(fmt, "info", stream)
    log = logging.getLogger("tailpipe.example")
    log.debug("below the level")
    log.warning(
        "dependency failing",
        extra={"dependency": "postgres", "attempt": 3, "color_message": "\x1b[36mnoise\x1b[0m"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("flush failed", extra={"where": Path("/tmp/x")})


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_ts_level_event_and_fields() -> None:
    out = io.StringIO()
    _emit("auto", out)  # not a terminal: JSON
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["ts"].endswith("Z")
    assert "T" in first["ts"]
    assert {k: first[k] for k in ("level", "logger", "event", "dependency", "attempt")} == {
        "level": "warning", "logger": "tailpipe.example", "event": "dependency failing",
        "dependency": "postgres", "attempt": 3,
    }  # fmt: skip
    assert "color_message" not in first, "uvicorn's coloured copy of the line is dropped"
    # A traceback stays inside its line; a field JSON cannot hold is written as text.
    assert second["level"] == "error"
    assert second["where"] == "/tmp/x"
    assert "ValueError: boom" in second["exc"]


@pytest.mark.usefixtures("restore_root")
def test_text_on_a_terminal() -> None:
    out = Terminal()
    _emit("auto", out)
    lines = out.getvalue().splitlines()
    assert "WARNING" in lines[0]
    assert "example" in lines[0]
    assert lines[0].endswith("dependency failing  dependency=postgres attempt=3")  # no colours
    assert "Traceback" in out.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_format_forced_either_way() -> None:
    out = Terminal()
    _emit("json", out)
    assert all(orjson.loads(line) for line in out.getvalue().splitlines()[:1])
    plain = io.StringIO()
    _emit("text", plain)
    assert plain.getvalue().split()[1] == "WARNING"
