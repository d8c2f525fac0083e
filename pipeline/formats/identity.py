"""An item's identity, its Kafka key: derived from content that a sender's retry does not change.

Every producer keys a message by the identity of what it holds, never by its script name. One
busy script (a Worker with its Durable Objects) then spreads over every partition, so every
replica works; and a retried item, whoever sends it again and however it is re-serialised,
lands on the partition of its first copy, where deduplication can meet it.

- A trace item or a Logpush record (a JSON object): the BLAKE2b-128 digest of its canonical
  form, its keys sorted at every depth and no whitespace. Key order, whitespace, and being
  sent alone or inside an array with other items do not change it; any change of content
  does. Numbers keep their written type: `1` and `1.0` are different items.
- A message whose bytes are already the one serialisation its producer will ever send (the
  Python logger's envelope, built once and retried as the same bytes): the digest of those
  bytes.

Keys are 32 lowercase hex characters, readable in any Kafka tool. Nothing downstream depends on
a per-script order: rows carry their own event time, and rollups merge commutatively.
"""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import Any

import orjson

KEY_HEX_CHARS = 32
_DIGEST_BYTES = KEY_HEX_CHARS // 2
_SORTED = orjson.OPT_SORT_KEYS


def item_key(item: dict[str, Any]) -> bytes:
    """The key of a parsed trace item or Logpush record."""
    try:
        canonical = orjson.dumps(item, option=_SORTED)
    except (orjson.JSONEncodeError, TypeError):
        # A lone surrogate (a string cut inside an emoji by `JSON.stringify`) is kept as its
        # escape, which orjson refuses to write; the standard library writes it as sent.
        canonical = json.dumps(
            item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8", "surrogatepass")
    return value_key(canonical)


def value_key(value: bytes) -> bytes:
    """The key of a message whose bytes are its only serialisation."""
    return blake2b(value, digest_size=_DIGEST_BYTES).hexdigest().encode("ascii")


def document_key(document: object) -> bytes | None:
    """`item_key` of a JSON object; None for anything else (a producer then lets Kafka spread
    the keyless message)."""
    return item_key(document) if isinstance(document, dict) else None
