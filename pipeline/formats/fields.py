"""Typed readers for decoded JSON values, shared by every input format.

Each reader takes the raw value plus where it sits (`prefix`, the path of the containing object
ending in `.` or `:`, and `name`, the key below it) and returns the value in the record's type,
or raises `DecodeError` naming the field. The path is joined only when raising: the readers run
for every field of every message, and building path strings eagerly would cost more than the
checks themselves. Each reader tests the common well-typed case first and leaves conversions
(numbers given as strings, fractional milliseconds) and error reporting to a slower helper.
"""

from __future__ import annotations

from typing import NoReturn

import orjson

from pipeline.errors import DecodeError
from pipeline.formats.invocation import JSON

_dumps = orjson.dumps

MIN_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: earlier epoch-ms timestamps are clock bugs or seconds given as ms."""
MAX_MS = 7_258_118_400_000
"""2200-01-01T00:00:00Z (exclusive): later ones are microseconds or garbage."""
MAX_DURATION_MS = 2**31 - 1
"""About 24.8 days: fits a PostgreSQL `integer`; no invocation runs longer."""
MAX_NAME_BYTES = 1024
"""Longest script name or outcome, in UTF-8 bytes. Both are keys of btree indexes (and parts of
alert dedup keys), and PostgreSQL refuses an index entry over about 2.7 KB: a longer "name" is
not one, and storing it cut would be a guess. Workers names are at most 63 characters."""
MAX_DEPTH = 253
"""Deepest nesting accepted in a message. orjson refuses to write more than 254 levels; values
stored from a message (in `extra`, `data`) are at least one level below its top, so a later
stage can still wrap them in two more."""


def at(prefix: str, name: str) -> str:
    """The JSON-path-like field name: `logs[2].level`, `[3].outcome`, `line 7:event`, or `$`."""
    if name:
        return prefix + name
    return prefix.rstrip(".:") or "$"


def describe(value: object) -> str:
    """A short description of a JSON value for error messages: its JSON type, and the value
    itself for scalars (cut to 40 characters so one bad field cannot bloat a dead letter)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        text = repr(value)
        return f"number {text[:40]}"
    if isinstance(value, str):
        return f"string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return "array"
    return "object"


def expected(prefix: str, name: str, what: str, value: object) -> NoReturn:
    raise DecodeError(at(prefix, name), f"expected {what}, got {describe(value)}")


def opt_str(value: JSON, prefix: str, name: str) -> str | None:
    """A string, or None when null or absent. `""` also means absent: Logpush writes unset
    strings as `""`, and treating them alike in every format keeps the formats equivalent."""
    if type(value) is str:
        return value or None
    if value is None:
        return None
    expected(prefix, name, "a string", value)


def key_name(value: JSON, prefix: str, name: str) -> str | None:
    """`opt_str` for a value that becomes an index key: at most MAX_NAME_BYTES long."""
    found = opt_str(value, prefix, name)
    # Up to a quarter of the limit in characters cannot exceed it in bytes: no encode needed.
    if found is not None and len(found) > MAX_NAME_BYTES // 4:
        size = len(found.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise DecodeError(
                at(prefix, name), f"{size} bytes long; at most {MAX_NAME_BYTES} fit an index key"
            )
    return found


def text(value: JSON, prefix: str, name: str) -> str:
    """A string; null or absent is `""` (exception names and messages are never null in
    runtime output, but hand-made captures leave them out)."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    expected(prefix, name, "a string", value)


def flag(value: JSON, prefix: str, name: str) -> bool:
    """A boolean; null or absent is False. Strings like "true" are refused: unlike numbers,
    their spelling varies ("1", "yes", "True") and no producer sends them."""
    if value is True or value is False:
        return value
    if value is None:
        return False
    expected(prefix, name, "a boolean", value)


def str_list(value: JSON, prefix: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        expected(prefix, name, "an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            expected(prefix, f"{name}[{i}]", "a string", item)
    return tuple(value)


def epoch_ms(value: JSON, prefix: str, name: str) -> int | None:
    """Epoch milliseconds in years 2000..2199, or None when null or absent."""
    if type(value) is int and MIN_MS <= value < MAX_MS:
        return value
    if value is None:
        return None
    number = _integer(value, prefix, name, "epoch milliseconds (an integer)")
    if not MIN_MS <= number < MAX_MS:
        raise DecodeError(
            at(prefix, name), f"{number} is not epoch milliseconds in years 2000..2199"
        )
    return number


def duration_ms(value: JSON, prefix: str, name: str) -> int | None:
    """A non-negative duration in whole milliseconds, or None when null or absent."""
    if type(value) is int and 0 <= value <= MAX_DURATION_MS:
        return value
    if value is None:
        return None
    number = _integer(value, prefix, name, "a duration in milliseconds (an integer)")
    if number < 0:
        raise DecodeError(at(prefix, name), f"{number} is negative")
    if number > MAX_DURATION_MS:
        raise DecodeError(at(prefix, name), f"{number} is longer than {MAX_DURATION_MS} ms")
    return number


def count(value: JSON, prefix: str, name: str) -> int | None:
    """A non-negative integer count (tokens, files), or None when null or absent."""
    if type(value) is int and value >= 0:
        return value
    if value is None:
        return None
    number = _integer(value, prefix, name, "a non-negative integer")
    if number < 0:
        raise DecodeError(at(prefix, name), f"{number} is negative")
    return number


def status(value: JSON, prefix: str, name: str) -> int | None:
    """An HTTP status code 0..999 (0: no response was sent), or None when null or absent."""
    if type(value) is int and 0 <= value <= 999:
        return value
    if value is None:
        return None
    number = _integer(value, prefix, name, "an HTTP status (an integer)")
    if not 0 <= number <= 999:
        raise DecodeError(at(prefix, name), f"{number} is not an HTTP status (0..999)")
    return number


def _integer(value: JSON, prefix: str, name: str, what: str) -> int:
    """The slow path of the integer readers: conversions, or the error."""
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is float:
        # orjson never yields NaN or infinity, so int() cannot fail; fractional milliseconds
        # (a Python producer's time.time() * 1000) are truncated toward zero.
        return int(value)
    # Digits only: "12" is unambiguous, while "-1", "1e3", " 12" or "12.5" are not worth guessing.
    if kind is str and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        return int(value)
    expected(prefix, name, what, value)


def too_deep(value: JSON) -> bool:
    """True if `value` nests containers more than MAX_DEPTH levels deep. orjson is the probe:
    it refuses to write more than 254 levels, and the tuple adds one, so this is a C-speed
    depth test (a Python walk costs twice as much). Callers run it only when a bracket count
    says the depth could exceed the limit."""
    try:
        _dumps((value,))
    except TypeError as error:
        # "Recursion limit reached", or a lone surrogate (from `sanitize.loads`' lenient path,
        # which orjson cannot write): that rare value is measured by a walk instead.
        return "surrogates" not in str(error) or _deeper_than(value, MAX_DEPTH)
    return False


def _deeper_than(value: JSON, limit: int) -> bool:
    stack: list[tuple[JSON, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((c, depth + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def deep_field(value: JSON, prefix: str, limit: int = MAX_DEPTH) -> str:
    """The field holding the over-deep part of `value`, named down to three levels (a path
    250 levels long would help nobody). An iterative walk: the input is hostile, and Python's
    recursion limit is lower than orjson's 1024 levels. Only for the error message."""
    stack: list[tuple[JSON, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return at(prefix, path)
        pairs = node.items() if type(node) is dict else enumerate(node)
        for key, child in pairs:
            if type(child) is dict or type(child) is list:
                if depth <= 3:
                    step = f"[{key}]" if type(node) is list else f".{key}" if path else str(key)
                    push_path = path + step
                else:
                    push_path = path
                stack.append((child, depth + 1, push_path))
    return at(prefix, "")
