"""Dead letters: the record kept for a message that cannot be stored, and the object holding them.

Pure: no I/O, no clock (the caller gives the time). One object holds the dead letters of one
partition over one offset range that a flush covered; its name follows from topic, partition
and range alone, so a retried or repeated write lands on the same object and never makes a
second copy::

    <prefix>/<topic>/<partition>/<first:020d>-<last:020d>.jsonl.gz

Offsets are zero-padded so that names sort as numbers: listing "everything from offset N on"
is one `StartAfter`. The body is gzip'd JSON lines, one per message: the value (as UTF-8 text,
or base64 when it is not UTF-8), key, headers, origin, Kafka timestamp, error class and message,
and the pipeline version. Secrets are replaced by the same rules as stored rows, before the
record exists: the dead-letter store is storage too. The message itself, as a batch holds it, is
a `DeadLetter` (`pipeline.transform.batch`).
"""

from __future__ import annotations

import base64
import gzip
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

from pipeline import __version__
from pipeline.errors import DecodeError
from pipeline.transform.batch import DeadLetter
from pipeline.transform.redact.engine import needs_redaction, redact_json, redact_text


def object_key(prefix: str, topic: str, partition: int, first: int, last: int) -> str:
    """The object for the dead letters of `topic[partition]` offsets first..last (inclusive)."""
    return f"{partition_prefix(prefix, topic, partition)}{first:020d}-{last:020d}.jsonl.gz"


def partition_prefix(prefix: str, topic: str, partition: int) -> str:
    lead = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{lead}{topic}/{partition}/"


def first_offset_of(key: str) -> int:
    """The first offset an object name covers (the inverse of `object_key`)."""
    name = key.rsplit("/", 1)[-1]
    return int(name.split("-", 1)[0])


def _bytes_field(data: bytes, counts: Counter[str]) -> tuple[str, str]:
    """(text, encoding): UTF-8 text when it is, else base64; secrets replaced either way.

    JSON is redacted as JSON (the text rules could cut through an escaped quote and leave it
    unreadable, and a dead letter must stay replayable); other text by the text rules;
    non-UTF-8 bytes through latin-1, which maps every byte to one character and back, so only
    the secrets change."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        cleaned = redact_text(data.decode("latin-1"), counts).encode("latin-1")
        return base64.b64encode(cleaned).decode(), "base64"
    if not needs_redaction(text) and "%" not in text:
        return text, "utf-8"
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return redact_text(text, counts), "utf-8"
    return orjson.dumps(redact_json(parsed, counts)).decode(), "utf-8"


def record(
    topic: str, partition: int, letter: DeadLetter, at: str, counts: Counter[str]
) -> dict[str, Any]:
    """The JSON object kept for one dead letter; `at` is when it was dead-lettered (RFC 3339)."""
    value, value_encoding = _bytes_field(letter.value, counts)
    out: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": letter.offset,
        "timestamp_ms": letter.timestamp_ms,
        "value": value,
        "value_encoding": value_encoding,
    }
    if letter.key is not None:
        out["key"], out["key_encoding"] = _bytes_field(letter.key, counts)
    if letter.headers:
        out["headers"] = [[name, *_bytes_field(raw, counts)] for name, raw in letter.headers]
    out["error_class"] = letter.error_class
    out["error"] = redact_text(letter.error, counts)
    out["pipeline_version"] = __version__
    out["dead_lettered_at"] = at
    return out


def encode(records: Iterable[dict[str, Any]]) -> bytes:
    """The object body. mtime=0: the same records always give the same bytes."""
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    return gzip.compress(lines, compresslevel=6, mtime=0)


def _unbytes(text: str, encoding: str) -> bytes:
    return base64.b64decode(text) if encoding == "base64" else text.encode()


def decode_object(body: bytes) -> list[tuple[str, int, DeadLetter]]:
    """(topic, partition, dead letter) for every record of an object body.

    Raises DecodeError naming the line when the body is not what `encode` writes."""
    try:
        text = gzip.decompress(body)
    except (OSError, EOFError) as exc:
        raise DecodeError("", f"not a gzip'd dead-letter object: {exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = orjson.loads(line)
            key = r.get("key")
            letter = DeadLetter(
                offset=int(r["offset"]),
                timestamp_ms=int(r["timestamp_ms"]),
                key=None if key is None else _unbytes(key, r.get("key_encoding", "utf-8")),
                value=_unbytes(r["value"], r["value_encoding"]),
                headers=tuple(
                    (name, _unbytes(text, enc)) for name, text, enc in r.get("headers", ())
                ),
                error_class=str(r["error_class"]),
                error=str(r["error"]),
            )
            out.append((str(r["topic"]), int(r["partition"]), letter))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"line {number}", f"not a dead-letter record: {exc}") from None
    return out
