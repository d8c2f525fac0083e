"""The recent-logs cursor: where a page ended, and the window the first page fixed.

Opaque to clients: base64url (no padding) of a packed record and its HMAC-SHA256 tag,
truncated to 16 bytes, about 100 characters for a usual topic name. Pages are cut by keyset on
(ts, kafka_offset, kafka_partition, item, seq, topic) descending, which is unique per log row,
so rows arriving while a client pages never shift a page: newer ones are above the first page,
and none is skipped or repeated. Pure: no I/O, no clock (`now` is given).

A cursor is checked twice. Its tag must be the one `key` gives, so an edited or hand-made
cursor is refused; and its window must be one a first page could have fixed: no longer than
`MAX_HOURS`, not ending in the future, not older than `MAX_HOURS`, its position inside it.
The second check holds even for whoever can compute the key (see `key_for`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson

from pipeline.api.params import MAX_HOURS
from pipeline.errors import InputError

VERSION = 2
TAG_BYTES = 16
_HEAD = struct.Struct(">Bqqqqiii")  # version, since, until, ts (µs), offset, partition, item, seq
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
SKEW = timedelta(minutes=5)
"""How far in the future a window may end: the clocks of the API replicas may differ."""
MIN_SPAN, MAX_SPAN = timedelta(hours=1), timedelta(hours=MAX_HOURS)  # what `hours` allows
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MAX_US = 253_402_300_800_000_000  # 10000-01-01: datetime's range


class InvalidCursor(InputError):
    """A cursor this API did not make, or one whose window the limits refuse."""


FORGED = "not a cursor this API made, or made before the API's tokens changed"


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


def key_for(tokens: Iterable[str]) -> bytes:
    """The signing key: derived from the API's tokens, so every replica configured alike
    shares it with no setting of its own, and paging works behind a load balancer.

    Changing the tokens changes the key: outstanding cursors get 422 and their clients start
    again from the first page. scrypt, not a plain hash, because a cursor (say, from a proxy's
    log) lets whoever holds one test guesses of the tokens offline: that costs 16 MiB and tens
    of milliseconds per guess. Whoever knows every token can compute the key, and so sign a
    cursor; the window check still bounds what that cursor can ask for.
    """
    canonical = orjson.dumps(sorted({t for t in tokens if t}))
    return hashlib.scrypt(canonical, salt=b"tailpipe api cursor v2", n=2**14, r=8, p=1, dklen=32)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // _MICROSECOND


def _time(us: int) -> datetime:
    if not 0 <= us < _MAX_US:
        raise InvalidCursor(FORGED)
    return _EPOCH + us * _MICROSECOND


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:TAG_BYTES]


def encode(cursor: Cursor, key: bytes) -> str:
    p = cursor.after
    payload = _HEAD.pack(
        VERSION, _us(cursor.since), _us(cursor.until), _us(p.ts), p.kafka_offset,
        p.kafka_partition, p.item, p.seq,
    ) + p.topic.encode()  # fmt: skip
    return base64.urlsafe_b64encode(payload + _tag(key, payload)).decode().rstrip("=")


def decode(text: str, key: bytes, now: datetime) -> Cursor:
    """The cursor `encode` made with `key`, its window checked against `now`.

    Raises InvalidCursor, with a message for the client, for anything else."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidCursor(FORGED)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor(FORGED) from None
    payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    # Constant time, and before anything of the payload is looked at.
    if len(raw) < _HEAD.size + TAG_BYTES or not hmac.compare_digest(tag, _tag(key, payload)):
        raise InvalidCursor(FORGED)
    version, since, until, ts, offset, partition, item, seq = _HEAD.unpack_from(payload)
    if version != VERSION:
        raise InvalidCursor(FORGED)
    try:
        topic = payload[_HEAD.size :].decode()
    except UnicodeDecodeError:
        raise InvalidCursor(FORGED) from None
    cursor = Cursor(
        _time(since), _time(until), Position(_time(ts), offset, partition, item, seq, topic)
    )
    _check_window(cursor, now)
    return cursor


def _check_window(cursor: Cursor, now: datetime) -> None:
    """The limits `hours` has, applied again: a cursor never reaches further than a first page."""
    since, until = cursor.since, cursor.until
    if not MIN_SPAN <= until - since <= MAX_SPAN:
        raise InvalidCursor(f"its window is not between 1 and {MAX_HOURS} hours long")
    if until > now + SKEW:
        raise InvalidCursor("its window ends in the future")
    if until < now - MAX_SPAN:
        raise InvalidCursor(f"older than {MAX_HOURS} hours: start again without a cursor")
    if not since <= cursor.after.ts <= until:
        raise InvalidCursor("its position is outside its window")
