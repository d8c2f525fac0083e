"""The typed records a log entry can carry (`"record": {"type": ..., fields}`), with their
fields held to the types the pipeline's decoder accepts.

A wrong-typed field would make the decoder refuse the whole trace item, losing a request's
every log line to one bad argument. So a field that is not of its type (and cannot be read as
it: `"200"` is 200) becomes null, and the value given is kept as text in the entry's context
under `invalid_fields`, where it can still be seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], Any]
"""A field's value in its type, or `_INVALID`."""

_INVALID = object()


def _text(value: Any) -> Any:
    return value if type(value) is str else _INVALID


def _optional_text(value: Any) -> Any:
    return value if value is None or type(value) is str else _INVALID


_MAX_COUNT = 2**63 - 1
"""The pipeline stores counts in 64-bit columns; a wider one is invalid, not a lost item."""


def _count(value: Any) -> Any:
    """A non-negative integer (digit strings read as one), or None."""
    if value is None or (type(value) is int and 0 <= value <= _MAX_COUNT):
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return _INVALID


def _status(value: Any) -> Any:
    number = _count(value)
    return number if number is _INVALID or number is None or number <= 999 else _INVALID


def _duration(value: Any) -> Any:
    """Milliseconds, fractions kept (a 0.37 ms timer is real information), or None."""
    if value is None or ((type(value) is int or type(value) is float) and value >= 0):
        return value if type(value) is not float or value == value else _INVALID  # NaN
    return _count(value)


FIELDS: dict[str, dict[str, Check]] = {
    "api_call": {
        "provider": _text,
        "endpoint": _text,
        "model": _optional_text,
        "status": _status,
        "duration_ms": _duration,
        "tokens_in": _count,
        "tokens_out": _count,
        "rate_limit_remaining": _count,
    },
    "scan": {"repo": _text, "files": _count, "status": _text, "duration_ms": _duration},
    "timer": {"name": _text, "duration_ms": _duration},
}


def typed(kind: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`({"type": kind, **fields}, invalid)`: every field of the kind, in order, null when
    absent or invalid; `invalid` maps the invalid ones to the text of what was given."""
    record: dict[str, Any] = {"type": kind}
    invalid: dict[str, str] = {}
    for name, check in FIELDS[kind].items():
        value = values.get(name)
        checked = check(value)
        if checked is _INVALID:
            invalid[name] = _shown(value)
            checked = None
        record[name] = checked
    return record, invalid


def _shown(value: Any) -> str:
    try:
        return repr(value)[:200]
    except Exception:
        return f"<unprintable {type(value).__name__}>"
