"""Logpush `workers_trace_events` records (PascalCase fields, one record per NDJSON line).

A job pushes only the fields it selected, so every field is optional; unset strings arrive as
`""` and mean absent. Keys inside `Event`, `Logs[]` and `Exceptions[]` are matched
case-insensitively (exceptions are seen both as `Name` and `name`). Logpush cuts logs and
exceptions at 16,384 characters and leaves a marker such as `<<<Logpush: messages truncated>>>`,
as an element of the array or inside a message: either sets `truncated`.
"""

from __future__ import annotations

from pipeline.formats.console import render
from pipeline.formats.entries import exception
from pipeline.formats.fields import (
    duration_ms,
    epoch_ms,
    expected,
    flag,
    key_name,
    opt_str,
    status,
    str_list,
    text,
)
from pipeline.formats.invocation import JSON, LOG_LEVELS, ExceptionInfo, Invocation, LogLine

MARKER = "<<<Logpush"

EVENT_TYPES = {
    "fetch": "fetch",
    "scheduled": "scheduled",
    "alarm": "alarm",
    "queue": "queue",
    "email": "email",
    "worker_rpc": "rpc",
    "hibernatable_web_socket": "websocket",
    "tail": "tail",
}
"""Logpush's EventType -> Invocation.event_type. Others become `unknown`, kept in `extra`."""

KEYS = frozenset(
    (
        "ScriptName",
        "Outcome",
        "EventTimestampMs",
        "EventType",
        "Event",
        "Logs",
        "Exceptions",
        "CPUTimeMs",
        "WallTimeMs",
        "ScriptTags",
        "DispatchNamespace",
        "Entrypoint",
        "ScriptVersion",
    )
)
"""The dataset's fields: any one of them marks an object as a Logpush record."""

_TYPED = (KEYS - {"ScriptVersion"}) | {"Truncated"}
_LEVELS = {level: level for level in LOG_LEVELS} | {"warning": "warn", "": "log"}


def invocation(record: dict[str, JSON], prefix: str) -> Invocation:
    get = record.get
    extra = {key: value for key, value in record.items() if key not in _TYPED}
    raw_type = opt_str(get("EventType"), prefix, "EventType")
    event_type = EVENT_TYPES.get(raw_type, "unknown") if raw_type is not None else None
    if event_type == "unknown":
        extra["EventType"] = raw_type
    method = url = code = None
    event = get("Event")
    if event is not None and event != "":
        if type(event) is not dict:
            expected(prefix, "Event", "an object", event)
        method, url, code = _event(event, extra, prefix)
        if event_type is None:
            event_type = "fetch" if url is not None or method is not None else "unknown"
    logs, cut = _logs(get("Logs"), prefix)
    exceptions, cut_exceptions = _exceptions(get("Exceptions"), prefix)
    version = get("ScriptVersion")
    return Invocation(
        script=key_name(get("ScriptName"), prefix, "ScriptName"),
        event_type=event_type or "unknown",
        timestamp_ms=epoch_ms(get("EventTimestampMs"), prefix, "EventTimestampMs"),
        outcome=key_name(get("Outcome"), prefix, "Outcome") or "unknown",
        method=method,
        url=url,
        status=code,
        cpu_ms=duration_ms(get("CPUTimeMs"), prefix, "CPUTimeMs"),
        wall_ms=duration_ms(get("WallTimeMs"), prefix, "WallTimeMs"),
        logs=logs,
        exceptions=exceptions,
        truncated=flag(get("Truncated"), prefix, "Truncated") or cut or cut_exceptions,
        script_version=None if version is None else _version(version, prefix),
        entrypoint=opt_str(get("Entrypoint"), prefix, "Entrypoint"),
        dispatch_namespace=opt_str(get("DispatchNamespace"), prefix, "DispatchNamespace"),
        script_tags=str_list(get("ScriptTags"), prefix, "ScriptTags"),
        extra=extra,
        source="logpush",
    )


def _lower(obj: dict[str, JSON]) -> dict[str, JSON]:
    return {key.lower(): value for key, value in obj.items()}


def _event(
    event: dict[str, JSON], extra: dict[str, JSON], prefix: str
) -> tuple[str | None, str | None, int | None]:
    """`(method, url, status)` from `Event.Request`/`Event.Response`; every other key of the
    event (`RayID`, ...) goes into `extra` as spelled, and so do leftover request or response
    keys, under `Request`/`Response`."""
    method = url = code = None
    for key, value in event.items():
        lowered = key.lower()
        if lowered == "request" and value is not None and value != "":
            if type(value) is not dict:
                expected(prefix, "Event.Request", "an object", value)
            rest = {}
            for name, part in value.items():
                if name.lower() == "url":
                    url = opt_str(part, prefix, "Event.Request.URL")
                elif name.lower() == "method":
                    method = opt_str(part, prefix, "Event.Request.Method")
                else:
                    rest[name] = part
            if rest:
                extra["Request"] = rest
        elif lowered == "response" and value is not None and value != "":
            if type(value) is not dict:
                expected(prefix, "Event.Response", "an object", value)
            rest = {}
            for name, part in value.items():
                if name.lower() == "status":
                    if part != "":
                        code = status(part, prefix, "Event.Response.Status")
                else:
                    rest[name] = part
            if rest:
                extra["Response"] = rest
        else:
            extra[key if key not in extra else f"Event.{key}"] = value
    return method, url, code


def _logs(logs: JSON, prefix: str) -> tuple[tuple[LogLine, ...], bool]:
    if type(logs) is not list:
        if logs is None or logs == "":
            return (), False
        if type(logs) is str and MARKER in logs:
            return (), True
        expected(prefix, "Logs", "an array", logs)
    lines = []
    cut = False
    for i, entry in enumerate(logs):
        if type(entry) is str and MARKER in entry:
            cut = True
            continue
        where = f"{prefix}Logs[{i}]."
        if type(entry) is not dict:
            expected(where, "", "an object", entry)
        entry = _lower(entry)
        level = entry.get("level")
        canonical = _LEVELS.get(level.lower()) if type(level) is str else None
        if canonical is None:
            expected(where, "Level", f"one of {', '.join(LOG_LEVELS)}", level)
        line_text, data = render(entry.get("message"))
        cut = cut or MARKER in line_text
        timestamp = epoch_ms(entry.get("timestampms", entry.get("timestamp")), where, "TimestampMs")
        lines.append(LogLine(timestamp, canonical, line_text, data))
    return tuple(lines), cut


def _exceptions(entries: JSON, prefix: str) -> tuple[tuple[ExceptionInfo, ...], bool]:
    if type(entries) is not list:
        if entries is None or entries == "":
            return (), False
        if type(entries) is str and MARKER in entries:
            return (), True
        expected(prefix, "Exceptions", "an array", entries)
    found = []
    cut = False
    for i, entry in enumerate(entries):
        if type(entry) is str and MARKER in entry:
            cut = True
            continue
        where = f"{prefix}Exceptions[{i}]."
        if type(entry) is not dict:
            expected(where, "", "an object", entry)
        entry = _lower(entry)
        message = text(entry.get("message"), where, "Message")
        cut = cut or MARKER in message
        found.append(
            exception(
                epoch_ms(entry.get("timestampms", entry.get("timestamp")), where, "TimestampMs"),
                text(entry.get("name"), where, "Name"),
                message,
                opt_str(entry.get("stack"), where, "Stack"),
            )
        )
    return tuple(found), cut


def _version(version: JSON, prefix: str) -> str | None:
    """`ScriptVersion.ID`, else its `Tag` (`""` is unset); the object stays in `extra`."""
    if type(version) is not dict:
        if version == "":
            return None
        expected(prefix, "ScriptVersion", "an object", version)
    version = _lower(version)
    found = opt_str(version.get("id"), prefix, "ScriptVersion.ID")
    return found or opt_str(version.get("tag"), prefix, "ScriptVersion.Tag")
