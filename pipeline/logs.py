"""The pipeline's own log lines: JSON by default, readable on a terminal.

A JSON line is `{"ts", "level", "logger", "event", ...fields}`, one object per line, so a log
shipper can index it as it is. `event` is the message; the fields are what the call passed in
`extra=` (`log.warning("dependency failing", extra={"dependency": "postgres"})`): grep and
alerting work on stable names, not on parsing prose. A traceback is one `exc` field, never
extra lines. `TAILPIPE_LOG_FORMAT=auto` (the default) picks text when stderr is a terminal.

Every long-running command calls `configure` once; uvicorn is started with `log_config=None`
so its own lines come through here too.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

FORMATS = ("auto", "json", "text")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has: anything else on a record came from `extra=`. uvicorn adds
# `color_message`, its own line again with terminal colours: noise in a log store.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # default=str: a field we did not foresee (a path, an exception) must not lose the line.
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01.250 WARNING consumer  dependency failing  dependency=postgres attempt=3`."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        name = record.name.removeprefix("tailpipe.")
        extra = " ".join(f"{k}={_short(v)}" for k, v in fields(record).items())
        line = f"{clock}.{int(record.created % 1 * 1000):03d} {record.levelname:<7} {name:<10} "
        line += record.getMessage() + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return repr(text) if " " in text else text


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record (ours, aiokafka's, uvicorn's) to `stream` in the chosen format."""
    stream = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
