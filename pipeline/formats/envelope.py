"""The structured logger's typed records: a log entry's `record` and `context` objects.

A tailpipe envelope's log entry may carry `"record": {"type": ..., fields}`, which becomes
`LogLine.kind` plus fields merged into `LogLine.data`, and `"context": {bound fields}`, merged
into `LogLine.data` as they are. The known types have their fields checked so that extraction
can trust them; a type this decoder does not know is kept with its fields unchecked, so a
logger that gains a record type does not get its messages dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.errors import DecodeError
from pipeline.formats.fields import at, count, expected, status

KINDS = ("api_call", "scan", "timer")


def _string(value: Any, prefix: str, name: str) -> Any:
    if type(value) is str:
        return value
    expected(prefix, name, "a string", value)


def _number(value: Any, prefix: str, name: str) -> Any:
    """A non-negative duration; fractions kept (a timer's 0.37 ms is real information), strings
    of digits converted."""
    if (type(value) is int or type(value) is float) and value >= 0:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    if type(value) is int or type(value) is float:
        raise DecodeError(at(prefix, name), f"{value} is negative")
    expected(prefix, name, "a non-negative number of milliseconds", value)


_Check = Callable[[Any, str, str], Any]
_FIELDS: dict[str, dict[str, _Check]] = {
    "api_call": {
        "provider": _string,
        "endpoint": _string,
        "model": _string,
        "status": status,
        "duration_ms": _number,
        "tokens_in": count,
        "tokens_out": count,
        "rate_limit_remaining": count,
    },
    "scan": {"repo": _string, "files": count, "status": _string, "duration_ms": _number},
    "timer": {"name": _string, "duration_ms": _number},
}


def typed(record: Any, prefix: str) -> tuple[str, dict[str, Any]]:
    """`(kind, fields)` of a `record` object at `prefix` (e.g. `logs[0].record.`). Null
    fields are kept as null: the logger says "not known", which is worth storing."""
    if type(record) is not dict:
        expected(prefix, "", "an object", record)
    kind = record.get("type")
    if type(kind) is not str or not kind:
        expected(prefix, "type", "a non-empty string", kind)
    checks = _FIELDS.get(kind)
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if key == "type":
            continue
        check = checks.get(key) if checks is not None else None
        fields[key] = value if check is None or value is None else check(value, prefix, key)
    return kind, fields


def context(value: Any, prefix: str) -> dict[str, Any] | None:
    """The bound fields of a log entry's `context`, or None when null or absent."""
    if value is None:
        return None
    if type(value) is not dict:
        expected(prefix, "", "an object", value)
    return value
