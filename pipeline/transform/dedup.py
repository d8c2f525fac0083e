"""Deduplication: what makes a stored invocation or span the same as one stored before.

Every sender retries (Logpush after a timeout or a 5xx, a Tail Worker's `fetch`, OTLP clients
on 429 and 503, the collector's own 503 during a Kafka outage), and a request that reached
Kafka but whose answer was lost comes twice. Each invocation and span therefore gets an
identity, derived from content a retry does not change, and the flush stores only those whose
identity is new (`pipeline.postgres.dedup`, in the transaction with the offsets).

An identity is (event time, 64-bit digest): the event time is part of it, so the keys of one
day sit in one day partition of `ingest_keys` and a retry meets its first copy there; the
digest, BLAKE2b over the fields below, tells apart what happened in the same millisecond.

- **A trace item, a Logpush record, the logger's envelope** in a message of its own, keyed by
  a digest (32 hex characters): every tailpipe producer keys a message by its item's
  identity, the BLAKE2b of its canonical form (`pipeline.formats.identity`: keys sorted, no
  whitespace; so key order, whitespace and batching with other items do not change it). The
  consumer takes that key rather than serialising the item again, with the script and event
  type beside it, so a foreign producer keying by something else (a trace id shared by many
  items) still loses nothing that differs in either.
- **Several items in one message, or a message without a digest key** (a producer writing to
  Kafka itself): the digest of the message's bytes and the item's place in it. A retry of the
  same message is caught; the same items batched differently are not. The collector splits
  every request into one message per item, so what it received is caught either way.
- **OTLP logs:** `faas.invocation_id` (Cloudflare), with the script; a fragment (console
  records told alone) also by its first line and line count, since one invocation may be cut
  into several. Without one: the records' trace and span id (an SDK's log group).
- **A span:** its trace and span id.
- **A streaming tail event:** its `invocationId` and `sequence`, which the runtime numbers
  within an invocation; however a forwarder batches and re-posts them, each is stored once.

Pure: no clock, no I/O. The identities travel with the rows in the batch's `Part`.
"""

from __future__ import annotations

from hashlib import blake2b

from pipeline.formats.identity import KEY_HEX_CHARS
from pipeline.formats.invocation import Invocation, Span

INVOCATION = 0
SPAN = 1
EVENT = 2
KINDS = ("invocation", "span", "event")
"""Label values of `tailpipe_duplicates_total`, by the kind numbers above."""

_HEX = frozenset(b"0123456789abcdef")
_SEP = b"\x00"


def digest(*parts: bytes | str) -> int:
    """BLAKE2b-64 of the parts, each ended by a NUL, as a signed 64-bit integer (`bigint`).
    One buffer and one call: the hash's own setup costs more than these few bytes."""
    data = b"".join(
        (part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part) + _SEP
        for part in parts
    )
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big", signed=True)


def is_digest_key(key: bytes | None) -> bool:
    """Whether a message key is an item digest, as tailpipe's producers write them."""
    return key is not None and len(key) == KEY_HEX_CHARS and _HEX.issuperset(key)


def of_invocation(
    inv: Invocation, key: bytes | None, message: MessageDigest | None, item: int
) -> int:
    """The digest of the `item`-th invocation of a message (see the module's docstring).
    `message` is None for a message of one item under a digest key (`keyed`), the common
    case, which needs nothing of the message's bytes."""
    script = inv.script or ""
    if inv.source == "otlp":
        invocation_id = inv.extra.get("faas.invocation_id")
        if type(invocation_id) is str and invocation_id:
            if not inv.fragment:
                return digest(b"otlp", invocation_id, script)
            first = inv.logs[0].text if inv.logs else ""
            return digest(b"otlp-part", invocation_id, script, first, str(len(inv.logs)))
        if inv.trace_id is not None:
            return digest(b"otlp-span", inv.trace_id, inv.span_id or "", script)
    if message is None:
        assert key is not None
        return digest(b"item", key, script, inv.event_type)
    return digest(b"message", message.value(), str(item))


def keyed(key: bytes | None, items: int) -> bool:
    """Whether a message's one item is identified by its key (else by the message)."""
    return items == 1 and is_digest_key(key)


def of_span(span: Span) -> int:
    return digest(b"span", span.trace_id, span.span_id)


def of_stream_event(invocation_id: str, sequence: int) -> int:
    return digest(b"stream", invocation_id, str(sequence))


class MessageDigest:
    """A message's bytes, digested once and only if an item needs it."""

    __slots__ = ("_data", "_digest")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._digest: bytes | None = None

    def value(self) -> bytes:
        if self._digest is None:
            self._digest = blake2b(self._data, digest_size=16).digest()
        return self._digest
