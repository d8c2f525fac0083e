"""The recent-logs cursor: where a page ended, and the window the first page fixed.

Opaque to clients (base64url of a small JSON array). Pages are cut by keyset on
(ts, kafka_offset, kafka_partition, item, seq, topic) descending, which is unique per log row,
so rows arriving while a client pages never shift a page: newer ones are above the first page,
and none is skipped or repeated. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

VERSION = 1


class InvalidCursor(ValueError):
    pass


class Position(NamedTuple):
    ts: datetime
    kafka_offset: int
    kafka_partition: int
    item: int
    seq: int
    topic: str


class Cursor(NamedTuple):
    since: datetime
    until: datetime
    after: Position


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


def _time(us: Any) -> datetime:
    if not isinstance(us, int) or isinstance(us, bool) or not 0 <= us < 253_402_300_800_000_000:
        raise InvalidCursor("not a cursor this API made")
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def encode(cursor: Cursor) -> str:
    p = cursor.after
    raw = [VERSION, _us(cursor.since), _us(cursor.until), _us(p.ts), p.kafka_offset,
           p.kafka_partition, p.item, p.seq, p.topic]  # fmt: skip
    return base64.urlsafe_b64encode(orjson.dumps(raw)).decode().rstrip("=")


def decode(text: str) -> Cursor:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("not a cursor this API made") from None
    if not isinstance(raw, list) or len(raw) != 9 or raw[0] != VERSION:
        raise InvalidCursor("not a cursor this API made")
    _, since, until, ts, offset, partition, item, seq, topic = raw
    numbers = (offset, partition, item, seq)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise InvalidCursor("not a cursor this API made")
    if not (isinstance(topic, str) and all(-(2**63) <= n < 2**63 for n in numbers)):
        raise InvalidCursor("not a cursor this API made")
    if not all(-(2**31) <= n < 2**31 for n in (partition, item, seq)):
        raise InvalidCursor("not a cursor this API made")
    return Cursor(
        _time(since), _time(until), Position(_time(ts), offset, partition, item, seq, topic)
    )
