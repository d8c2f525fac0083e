"""When a rate limit resets: a reset or `retry-after` value read as a moment (epoch ms).

A value reads as one when it is seconds since the epoch (GitHub), seconds from the line's time
up to a year (`retry-after`, the IETF draft), a duration such as `6m0s` or `20ms` (OpenAI), an
RFC 3339 time (Anthropic) or an HTTP date (`retry-after`); within the years 2000..2199, like
every timestamp the decoder accepts. Anything else, and a delay on a line without a time, is
no moment (None).

Its own room because it is a parser of five time formats with its own bounds, and knows
nothing of headers or log lines: `rate_limits` finds the values, in headers objects and free
text, and hands them here.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from email.utils import parsedate_to_datetime

from pipeline.formats.invocation import JSON

MIN_RESET_MS = 946_684_800_000
"""2000-01-01: resets are timestamps, held to the decoder's range of them."""
MAX_RESET_MS = 7_258_118_400_000
"""2200-01-01 (exclusive)."""
_EPOCH_S = (1_000_000_000, 10_000_000_000)
"""Numbers of seconds in this range are times since the epoch (2001..2286); smaller ones are
a delay from the line's time, up to `_MAX_DELAY_S` (no rate limit waits 31 years)."""
_MAX_DELAY_S = 366 * 86_400
"""The longest delay believed: a year (limits reset by the minute, hour, day or month)."""
_EPOCH_MS = (1_000_000_000_000, 10_000_000_000_000)
"""...and in this one, milliseconds since the epoch."""
_DECIMAL = re.compile(r"\d{1,12}\.\d{1,9}", re.ASCII).fullmatch
_DURATION = re.compile(
    r"(?:(\d{1,9})h)?(?:(\d{1,9})m(?!s))?(?:(\d{1,9}(?:\.\d{1,9})?)s)?(?:(\d{1,12})ms)?",
    re.ASCII,
).fullmatch


def reset_ms(value: JSON, ts_ms: int | None) -> int | None:
    """A reset or retry-after value as epoch ms (see the module), or None when it reads as no
    moment in 2000..2199, or is a delay and the line has no time."""
    if type(value) is str:
        text = value.strip()
        if not text or len(text) > 64:
            return None
        if text.isascii() and text.isdigit():
            return _seconds(int(text), ts_ms)
        first = text[0]
        if first.isalpha():  # an HTTP date: `Wed, 21 Oct 2015 07:28:00 GMT`
            try:
                return _moment(parsedate_to_datetime(text))
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        if len(text) >= 10 and text[4] == "-":  # RFC 3339 (with an offset): Anthropic
            try:
                return _moment(datetime.fromisoformat(text))
            except ValueError:
                pass
        duration = _DURATION(text)
        if duration is not None and any(duration.groups()):
            hours, minutes, seconds, millis = duration.groups()
            delay_ms = (
                int(hours or 0) * 3_600_000
                + int(minutes or 0) * 60_000
                + round(float(seconds or 0) * 1000)
                + int(millis or 0)
            )
            return _after(ts_ms, delay_ms) if delay_ms <= _MAX_DELAY_S * 1000 else None
        if _DECIMAL(text) is None:  # not float(): it takes `1e3`, `inf`, `1_0`
            return None
        return _seconds(float(text), ts_ms)  # decimal seconds: `1.5`
    if type(value) is int or type(value) is float:
        return _seconds(value, ts_ms) if math.isfinite(value) else None
    return None


def _seconds(number: float, ts_ms: int | None) -> int | None:
    if number < 0:
        return None
    if number <= _MAX_DELAY_S:
        return _after(ts_ms, round(number * 1000))
    if number < _EPOCH_S[0]:
        return None
    if number < _EPOCH_S[1]:
        return _bounded(round(number * 1000))
    if _EPOCH_MS[0] <= number < _EPOCH_MS[1]:
        return _bounded(round(number))
    return None


def _after(ts_ms: int | None, delay_ms: int) -> int | None:
    return None if ts_ms is None else _bounded(ts_ms + delay_ms)


def _moment(moment: datetime) -> int | None:
    if moment.tzinfo is None:  # a local time of nowhere: not a moment
        return None
    return _bounded(round(moment.timestamp() * 1000))


def _bounded(ms: int) -> int | None:
    return ms if MIN_RESET_MS <= ms < MAX_RESET_MS else None


def later(a: int | None, b: int | None) -> int | None:
    """The later of two resets, either of which may be unknown."""
    if a is None:
        return b
    return a if b is None or a >= b else b
