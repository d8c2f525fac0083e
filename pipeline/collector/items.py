"""The items of one request: what each route takes, checked whole before anything is published.

A Tail Worker posts its `events` (an array of trace items, or one item); a Logpush job posts
NDJSON, one `workers_trace_events` record per line. Every item must decode
(pipeline.formats.decode), so a request is published entirely or not at all and the sender
learns which item and field were wrong. Each item is keyed by its identity
(pipeline.formats.identity): one busy script spreads over every partition, and an item sent
again lands where its first copy did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.collector.rejection import Rejection
from pipeline.errors import DecodeError
from pipeline.formats.decode import decode
from pipeline.formats.identity import item_key
from pipeline.formats.sanitize import dumps, loads

MAX_ITEM_BYTES = 1_000_000
"""The broker's default `message.max.bytes` (1 MiB) less room for the record's own overhead."""


@dataclass(frozen=True, slots=True)
class Item:
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    items: list[Item]
    probe: bool = False
    """Logpush's destination check: answered 200, nothing published."""


def tail(body: bytes) -> Batch:
    """A trace item or an array of them, each re-serialized compactly. `JSON.stringify` writes
    a string cut inside an emoji as a lone surrogate escape: such a body is taken too, and the
    escape kept for the consumer to repair (`pipeline.formats.sanitize`)."""
    try:
        document, lenient = loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed", f"body: not JSON ({exc})") from None
    events = document if isinstance(document, list) else [document]
    items = []
    for index, event in enumerate(events):
        where = f"item {index}"
        if not isinstance(event, dict):
            raise Rejection(
                400,
                "invalid",
                f"{where}: expected a trace item (a JSON object), got {kind(event)}",
                item=index,
            )
        value = dumps(event, lenient)
        _check(value, where, item=index)
        items.append(Item(item_key(event), value))
    return Batch(items)


def logpush(body: bytes) -> Batch:
    """NDJSON records, each published as the line it arrived as."""
    records: list[tuple[int, bytes, dict[str, Any]]] = []
    for number, raw_line in enumerate(body.split(b"\n"), start=1):
        line = raw_line.strip()
        if not line:
            continue
        try:
            record, _ = loads(line)  # published as it arrived; the consumer repairs it
        except orjson.JSONDecodeError as exc:
            message = f"line {number}: not JSON ({exc})"
            raise Rejection(400, "malformed", message, line=number) from None
        if not isinstance(record, dict):
            raise Rejection(
                400,
                "invalid",
                f"line {number}: expected a JSON object per line, got {kind(record)}",
                line=number,
            )
        records.append((number, line, record))
    if not records:
        raise Rejection(400, "malformed", "body: no NDJSON records")
    if len(records) == 1 and _is_probe(records[0][2]):
        return Batch([], probe=True)
    items = []
    for number, line, record in records:
        _check(line, f"line {number}", line=number)
        items.append(Item(item_key(record), line))
    return Batch(items)


def _is_probe(record: dict[str, Any]) -> bool:
    """Cloudflare checks an HTTP destination, when a job is created or its destination changed,
    by uploading a gzipped `test.txt.gz` whose content is `{"content":"tests"}` (cloudflare-docs,
    logs/logpush/logpush-job/enable-destinations/http.mdx). Any lone `{"content": "..."}` counts,
    so a change of the word does not break job creation; no trace record has only that key."""
    return record.keys() == {"content"} and isinstance(record["content"], str)


def _check(value: bytes, where: str, **position: int) -> None:
    if len(value) > MAX_ITEM_BYTES:
        raise Rejection(
            413,
            "too_large",
            f"{where}: {len(value)} bytes; a Kafka message takes at most {MAX_ITEM_BYTES}",
            **position,
        )
    try:
        decode(value)
    except DecodeError as exc:
        raise Rejection(
            400,
            "invalid",
            f"{where}: {exc}",
            **position,
            field=exc.field,
            problem=exc.problem,
        ) from None


def kind(value: object) -> str:
    """How a refusal names the JSON type of a value that is not what a route takes."""
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )
