"""Log entries and exceptions of trace-shaped items (trace items and tailpipe envelopes).

A log entry is `{timestamp, level, message, errorInfo?}`, plus `context?` and `record?` from
tailpipe's structured logger; an exception is `{timestamp, name, message, stack?}`. Other keys
of an entry are dropped: `LogLine` and `ExceptionInfo` have no place for them, and the runtime
sends none.

The runtime's size-limit markers are recognised here (workerd's `tracer.c++`): past the 256 KB
budget it adds one `warn` log whose message starts with "Log size limit exceeded" (or "Trace
resource limit exceeded; could not capture event info." for an oversized request), and one
synthetic exception "Error: Trace resource limit exceeded; subsequent exceptions not recorded."
"""

from __future__ import annotations

import re

from pipeline.formats.console import render
from pipeline.formats.envelope import context, typed
from pipeline.formats.fields import MAX_MS, MIN_MS, epoch_ms, expected, opt_str, text
from pipeline.formats.invocation import JSON, LOG_LEVELS, ExceptionInfo, LogLine

LIMIT_LOG_PREFIXES = ("Log size limit exceeded", "Trace resource limit exceeded")
_FRAME = re.compile(r"\n[ \t]+at ")
_CLASS_NAME = re.compile(r"[A-Za-z_$][\w$]{0,99}")
LIMIT_EXCEPTION_PREFIX = "Trace resource limit exceeded"

# Case-insensitive, and Python's "warning" is taken for "warn": the structured logger may pass
# logging's level names through. Anything else is refused rather than stored as a new level.
_LEVELS = {level: level for level in LOG_LEVELS} | {"warning": "warn"}
_LEVEL_LIST = ", ".join(LOG_LEVELS)


def log_line(entry: JSON, prefix: str) -> LogLine:
    """One `logs[]` entry at `prefix` (e.g. `logs[2].`)."""
    if type(entry) is not dict:
        expected(prefix, "", "an object", entry)
    get = entry.get
    level = log_level(get("level"), prefix)
    timestamp = get("timestamp")
    if not (type(timestamp) is int and MIN_MS <= timestamp < MAX_MS):
        timestamp = epoch_ms(timestamp, prefix, "timestamp")
    line_text, data = render(get("message"))
    kind = None
    if "record" in entry or "context" in entry or "errorInfo" in entry:
        data, kind = _optional_parts(entry, prefix, data)
    return LogLine(timestamp, level, line_text, data, kind)


def is_limit_marker(line: LogLine) -> bool:
    return line.level == "warn" and line.text.startswith(LIMIT_LOG_PREFIXES)


def exception_info(entry: JSON, prefix: str) -> ExceptionInfo:
    """One `exceptions[]` entry at `prefix` (e.g. `exceptions[0].`)."""
    if type(entry) is not dict:
        expected(prefix, "", "an object", entry)
    get = entry.get
    timestamp = get("timestamp")
    if not (type(timestamp) is int and MIN_MS <= timestamp < MAX_MS):
        timestamp = epoch_ms(timestamp, prefix, "timestamp")
    name = get("name")
    if type(name) is not str:
        name = text(name, prefix, "name")
    message = get("message")
    if type(message) is not str:
        message = text(message, prefix, "message")
    return exception(timestamp, name, message, opt_str(get("stack"), prefix, "stack"))


def exception(
    timestamp_ms: int | None, name: str, message: str, stack: str | None
) -> ExceptionInfo:
    """An exception as the runtime reported it, with the class its stack's header names.

    V8 writes a stack as a header, `CustomError: message` (or the name alone for an empty
    message), then one `    at ...` line per frame. workerd reports `name: "Error"` for a
    subclass of Error and keeps the header, which names the class; other stacks arrive as frames
    alone. So when the header is the error itself (its name, then exactly the message) and names
    another class, that class is the name, and the runtime's is kept for grouping
    (`ExceptionInfo.reported_name`). The header is then dropped from the stack, which thus always
    holds frames only: the name and message are in the row already."""
    if not stack or stack[0].isspace():
        return ExceptionInfo(timestamp_ms, name, message, stack)
    found = _FRAME.search(stack)
    header, frames = (
        (stack[: found.start()], stack[found.start() + 1 :]) if found else (stack, None)
    )
    class_name, colon, rest = header.partition(": ")
    if not (_CLASS_NAME.fullmatch(class_name) and rest == message and (colon or not message)):
        return ExceptionInfo(timestamp_ms, name, message, stack)  # not a header: keep it all
    if class_name == name:
        return ExceptionInfo(timestamp_ms, name, message, frames)
    return ExceptionInfo(timestamp_ms, class_name, message, frames, name)


def log_level(raw: JSON, prefix: str) -> str:
    """A log entry's `level` at `prefix`, as stored (`LOG_LEVELS`)."""
    if type(raw) is str:
        level = _LEVELS.get(raw)  # the usual case: one lookup
        if level is None:
            level = _LEVELS.get(raw.lower())
        if level is not None:
            return level
    expected(prefix, "level", f"one of {_LEVEL_LIST}", raw)


def _optional_parts(
    entry: dict[str, JSON], prefix: str, data: dict[str, JSON] | None
) -> tuple[dict[str, JSON] | None, str | None]:
    """Merge errorInfo, context and record into `data`, in that order (later keys win)."""
    merged = dict(data) if data else {}
    error_info = entry.get("errorInfo")
    if error_info is not None:
        if type(error_info) is not list:
            expected(prefix, "errorInfo", "an array", error_info)
        # Aligned with the message arguments, null where an argument is not an Error: worth
        # keeping only when some argument is one (it holds the stack).
        if any(item is not None for item in error_info):
            merged["errorInfo"] = error_info
    bound = context(entry.get("context"), prefix + "context.")
    if bound:
        merged.update(bound)
    kind = None
    record = entry.get("record")
    if record is not None:
        kind, fields = typed(record, prefix + "record.")
        merged.update(fields)
    return merged or None, kind
