"""Log entries and exception entries in the Workers trace-item shape, redacted.

A log entry is `{"timestamp": ms, "level": ..., "message": [text], "context"?, "record"?}`; an
exception entry `{"timestamp": ms, "name": ..., "message": ..., "stack"?}` with Python's
traceback as the stack (its chain, from the application's first frame: see `stack`). Every
string in either passes through `pipeline.transform.redact` here, so nothing built by this
module can carry a secret out of the process.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson

from pipeline.logger.stack import APPLICATION, InApp, format_stack
from pipeline.transform.redact.engine import redact_json, redact_text

Entry = dict[str, Any]

LEVELS: dict[str, int] = {"debug": 10, "info": 20, "log": 20, "warn": 30, "error": 40}
"""The envelope's level names and their stdlib `logging` numbers (`log` is console.log: info)."""
LEVEL_ALIASES: dict[str, str] = {"warning": "warn", "critical": "error", "fatal": "error"}
"""Names a Python developer types for the envelope's levels."""

MAX_EXCEPTION_MESSAGE = 8 * 1024
MAX_STACK = 16 * 1024
"""Characters kept of an exception's message and stack: one runaway `repr` in a message must
not use up the whole trace item's budget."""


_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
"""The integers orjson writes; past them it refuses the whole value."""


def dumps(value: Any) -> bytes:
    """`value` as JSON. What orjson refuses to write, an integer wider than 64 bits or a dict
    key that is not a string, is written as text instead (`str(2**70)`, `"200"`): a field the
    application logged must not lose the whole record, and text is how `redact_json` already
    shows what JSON cannot hold. The common case pays nothing: the walk runs only after orjson
    refused."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(_writable(value))


def _writable(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {
            key if type(key) is str else str(key): _writable(item) for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [_writable(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _I64_MIN <= value <= _U64_MAX else str(value)
    return value


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def level_name(levelno: int) -> str:
    """A stdlib `logging` level number as an envelope level (CRITICAL is `error`)."""
    if levelno >= 40:
        return "error"
    if levelno >= 30:
        return "warn"
    if levelno >= 20:
        return "info"
    return "debug"


def render(message: object, args: tuple[object, ...]) -> str:
    """The message text; `%`-style arguments as stdlib logging takes them."""
    try:
        text = message if type(message) is str else str(message)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError, KeyError):
                # A mismatched format must not lose the message: show both, as logging would not.
                text = " ".join([text, *map(str, args)])
        return text
    except Exception:
        return f"<unprintable {type(message).__name__}>"


def log_entry(
    level: str,
    text: str,
    context: dict[str, Any] | None,
    record: dict[str, Any] | None,
    timestamp_ms: int,
) -> Entry:
    """An unredacted entry; `context` and `record` are left out when empty."""
    entry: Entry = {"timestamp": timestamp_ms, "level": level, "message": [text]}
    if context:
        entry["context"] = context
    if record:
        entry["record"] = record
    return entry


def redact_entry(entry: Entry, counts: Counter[str] | None) -> Entry:
    """A redacted copy of an entry: message, context and record (the record's strings too: an
    `endpoint` may be a full URL with its query). Unknown keys a processor added are redacted
    like JSON."""
    out: Entry = {}
    for key, value in entry.items():
        if key == "timestamp" or key == "level":
            out[key] = value
        elif key == "message" and type(value) is list:
            out[key] = [
                redact_text(part, counts) if type(part) is str else redact_json(part, counts)
                for part in value
            ]
        else:
            out[key] = redact_json(value, counts)
    return out


def exception_entry(
    exc: BaseException,
    counts: Counter[str] | None,
    timestamp_ms: int | None = None,
    in_app: InApp = APPLICATION,
) -> Entry:
    """The exception as the runtime reports an uncaught one, redacted: its class name, message
    and the traceback (`  File "...", line N, in f` and the source line, causes and contexts
    before it, framework frames before the application's collapsed: `stack.format_stack`)."""
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    if len(message) > MAX_EXCEPTION_MESSAGE:
        message = message[:MAX_EXCEPTION_MESSAGE] + "..."
    entry: Entry = {
        "timestamp": now_ms() if timestamp_ms is None else timestamp_ms,
        "name": type(exc).__name__,
        "message": redact_text(message, counts),
    }
    stack = _stack(exc, in_app)
    if stack:
        entry["stack"] = redact_text(stack, counts)
    return entry


def _stack(exc: BaseException, in_app: InApp) -> str:
    try:
        stack = format_stack(exc, in_app)
    except Exception:
        return ""
    if len(stack) > MAX_STACK:
        # The innermost frames, at the end, say where it failed: keep those.
        cut = stack.find("\n  File ", len(stack) - MAX_STACK)
        stack = "  ...\n" + stack[cut + 1 if cut >= 0 else len(stack) - MAX_STACK :]
    return stack
