"""Readers that turn untrusted field values into the types the extracted records promise.

Two sources: JSON values (a typed logger record's fields, an LLM SDK's usage object, logged
response headers) and regex group text. Neither may raise: a value of the wrong type or out of
range reads as None, because one odd log line must never cost the invocation its other records.
The decoder has already checked the typed records' known fields, so the first test of each JSON
reader is the one that passes; the rest is for data no decoder vouched for (usage objects,
headers, hand-built lines).
"""

from __future__ import annotations

import math

from pipeline.formats.invocation import JSON

MAX_COUNT = 10**18 - 1
"""Largest token, file or remaining count kept: fits PostgreSQL's bigint with room for sums."""
MAX_NAME = 200
"""Longest provider, model or endpoint kept. They are primary-key columns of `api_usage_daily`,
and PostgreSQL's btree refuses keys over about 2,700 bytes (a merge that fails every time
would stop the consumer), so a longer value is not a name: it reads as absent."""
_MAX_DIGITS = len(str(MAX_COUNT))
_INF = math.inf


def count(value: JSON) -> int | None:
    """A non-negative integer count from JSON: an int, an integral float, or a digit string."""
    if type(value) is int:
        return value if 0 <= value <= MAX_COUNT else None
    if type(value) is float:
        return int(value) if value.is_integer() and 0 <= value <= MAX_COUNT else None
    if type(value) is str:
        return parse_count(value)
    return None


def status(value: JSON) -> int | None:
    """An HTTP status 0..999 from JSON (0: no response was received)."""
    if type(value) is int:
        return value if 0 <= value <= 999 else None
    number = count(value)
    return number if number is not None and number <= 999 else None


def duration(value: JSON) -> float | None:
    """Non-negative finite milliseconds from JSON; fractions kept, as the decoder keeps them."""
    if type(value) is int:
        return value if 0 <= value <= MAX_COUNT else None
    if type(value) is float:
        return value if 0 <= value < _INF else None  # NaN fails both comparisons
    if type(value) is str:
        return parse_duration(value)
    return None


def text(value: JSON) -> str | None:
    """A non-empty string, else None."""
    return value if type(value) is str and value else None


def name(value: JSON) -> str | None:
    """A provider, model or endpoint name: a non-empty string of at most `MAX_NAME`
    characters without NUL (which PostgreSQL text cannot hold), else None."""
    if type(value) is str and 0 < len(value) <= MAX_NAME and "\x00" not in value:
        return value
    return None


def parse_count(group: str) -> int | None:
    """A count from regex text. `isascii` first: `str.isdigit` accepts "²", which `int` refuses;
    the length test keeps `int` away from strings of thousands of digits (ValueError past 4300)."""
    if group.isascii() and group.isdigit() and len(group) <= _MAX_DIGITS:
        return int(group)
    return None


def parse_duration(group: str) -> float | None:
    """Milliseconds from regex text: digits, or a decimal like `12.5`."""
    if group.isascii() and group.isdigit() and len(group) <= _MAX_DIGITS:
        return int(group)
    if len(group) > 40:
        return None
    try:
        number = float(group)  # also accepts "inf", "nan", "1e3", " 1_0 ": the range test sorts
    except ValueError:
        return None
    return number if 0 <= number <= MAX_COUNT else None
