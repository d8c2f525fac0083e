"""An OTLP logs export cut into Kafka messages, one invocation's records per message.

The decoder (pipeline/formats/otlp_logs.py) turns one message into one invocation, so each
message is an OTLP/JSON `ExportLogsServiceRequest` holding one `resourceLogs` entry (its
`resource`, its `schemaUrl`, and the `scopeLogs` with their `scope`) and only the records of
one invocation group. A record belongs to the group of

1. its `faas.invocation_id` attribute (the resource's, when the record has none), or, for a
   record without one, the invocation of a record with the same `traceId` in its
   `resourceLogs` entry, or, when it has no `traceId`, that entry's invocation if it holds
   only one (Cloudflare sends one entry per invocation, and its `console.*` records carry no
   invocation id), else
2. its (`traceId`, `spanId`): the records an OTel SDK writes inside one span, else
3. its `resourceLogs` entry.

The key of a message is the group's invocation id, else its trace id, else the digest of the
message (`pipeline.formats.identity.item_key`): a sender's retry, and the records of one
invocation that come in separate requests, land on one partition. A group larger than a Kafka
message is split into several messages with the same key.

Rejected records (counted in the answer's `partialSuccess`, the others are published):

- a record that is not a JSON object;
- a `traceId` or `spanId` that is neither absent, nor empty, nor 16 or 8 bytes in lowercase
  or uppercase hex (OTLP/JSON's form, written lowercase here) or in base64 (protobuf's generic
  JSON mapping, which some exporters use; rewritten as hex);
- a record that alone is larger than a Kafka message.

A body whose structure is not an export (`resourceLogs`, `scopeLogs` or `logRecords` not an
array, or an entry of the first two not an object) is refused whole with 400.

Cloudflare's preflight (a `resource` with `service.name = cloudflare-workers-observability`
and a record whose body starts `Hello from Cloudflare`, sent when a destination is created or
changed) is dropped: it must be answered 2xx and is no invocation.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.collector.items import MAX_ITEM_BYTES, Item
from pipeline.collector.rejection import Rejection
from pipeline.formats.identity import item_key
from pipeline.formats.sanitize import dumps

INVOCATION_ID = "faas.invocation_id"
PREFLIGHT_SERVICE = "cloudflare-workers-observability"
PREFLIGHT_BODY = "Hello from Cloudflare"
SHOWN_PROBLEMS = 3
"""How many rejected records the answer's `errorMessage` describes."""
_HEX = {16: re.compile(r"[0-9a-fA-F]{32}"), 8: re.compile(r"[0-9a-fA-F]{16}")}
_ID_BYTES = (("traceId", 16), ("spanId", 8))
_ZERO_TRACE = "0" * 32


@dataclass(frozen=True, slots=True)
class Export:
    """What one request gives: the messages to publish, and what was left out."""

    items: list[Item]
    records: int
    """Log records in `items`."""
    rejected: int
    problems: list[str]
    """Where and why, for the first `SHOWN_PROBLEMS` rejected records."""
    preflight: int
    """Cloudflare preflight records dropped."""

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = self.rejected - len(self.problems)
        tail = f"; and {more} more" if more > 0 else ""
        return f"{self.rejected} log records rejected: {'; '.join(self.problems)}{tail}"


@dataclass(slots=True)
class _Group:
    key: bytes | None
    by_scope: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def split(document: dict[str, Any], lenient: bool = False) -> Export:
    """The messages of a parsed export (`lenient`: it may hold lone surrogates)."""
    items: list[Item] = []
    records = rejected = preflight = 0
    problems: list[str] = []

    def reject(where: str, problem: str) -> None:
        nonlocal rejected
        rejected += 1
        if len(problems) < SHOWN_PROBLEMS:
            problems.append(f"{where}: {problem}")

    for i, entry in enumerate(_array(document.get("resourceLogs"), "resourceLogs")):
        where = f"resourceLogs[{i}]"
        entry = _object(entry, where)
        resource = entry.get("resource")
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        resource_invocation = _string_attribute(attributes, INVOCATION_ID)
        probing = _string_attribute(attributes, "service.name") == PREFLIGHT_SERVICE
        scopes = _array(entry.get("scopeLogs"), f"{where}.scopeLogs")
        taken: list[tuple[int, dict[str, Any], str | None]] = []
        for j, scope in enumerate(scopes):
            scope = scopes[j] = _object(scope, f"{where}.scopeLogs[{j}]")
            path = f"{where}.scopeLogs[{j}].logRecords"
            for k, record in enumerate(_array(scope.get("logRecords"), path)):
                if not isinstance(record, dict):
                    reject(f"{path}[{k}]", "not an object")
                    continue
                record, problem = _canonical_ids(record)
                if problem:
                    reject(f"{path}[{k}]", problem)
                    continue
                if probing and _says_hello(record):
                    preflight += 1
                    continue
                invocation = _string_attribute(record.get("attributes"), INVOCATION_ID)
                taken.append((j, record, invocation or resource_invocation))
        for group in _groups(taken).values():
            messages, oversized = _messages(entry, scopes, group, lenient)
            for item, count in messages:
                items.append(item)
                records += count
            for problem in oversized:
                reject(f"{where}: a record of group {group.key!r}", problem)
    return Export(items, records, rejected, problems, preflight)


def _groups(taken: list[tuple[int, dict[str, Any], str | None]]) -> dict[tuple[str, ...], _Group]:
    """The invocation groups of one `resourceLogs` entry's records (scope index, record, its
    invocation id), in the order they first appear.

    A record without an invocation id joins the invocation of a record with the same trace id;
    one without a trace id either joins the entry's invocation when it has only one:
    Cloudflare's `console.*` records carry only `name` and a sequence number, and the
    invocation log beside them carries the id. The others group by trace and span, and those
    with neither form the entry's own group."""
    by_trace: dict[str, str] = {}
    for _, record, invocation in taken:
        trace = _trace(record)
        if invocation and trace:
            by_trace.setdefault(trace, invocation)
    invocations = {invocation for _, _, invocation in taken if invocation}
    only = next(iter(invocations)) if len(invocations) == 1 else None
    groups: dict[tuple[str, ...], _Group] = {}
    for j, record, invocation in taken:
        trace = _trace(record)
        invocation = invocation or (by_trace.get(trace) if trace else only)
        identity: tuple[str, ...]
        if invocation:
            identity, key = ("invocation", invocation), invocation.encode()
        elif trace:
            identity, key = ("span", trace, record.get("spanId") or ""), trace.encode()
        else:
            identity, key = ("resource",), None  # the digest of the message
        groups.setdefault(identity, _Group(key)).by_scope.setdefault(j, []).append(record)
    return groups


def _trace(record: dict[str, Any]) -> str:
    """The record's trace id, "" when absent or all zeros (W3C's invalid id: no identity)."""
    trace = record.get("traceId")
    return trace if isinstance(trace, str) and trace != _ZERO_TRACE else ""


def _messages(
    entry: dict[str, Any], scopes: list[Any], group: _Group, lenient: bool
) -> tuple[list[tuple[Item, int]], list[str]]:
    """The group as one message with its record count, or as several when it exceeds a Kafka
    message; and the problem of each record that alone is too large for one."""
    document = _document(entry, scopes, group.by_scope)
    value = dumps(document, lenient)
    if len(value) <= MAX_ITEM_BYTES:
        count = sum(map(len, group.by_scope.values()))
        return [(Item(group.key or item_key(document), value), count)], []
    # Every scope of the group with no record: a chunk holds a subset of them, so this bounds
    # its frame from above, and each record costs its own size and a comma.
    frame = len(dumps(_document(entry, scopes, {j: [] for j in group.by_scope}), lenient))
    budget = MAX_ITEM_BYTES - frame
    out: list[tuple[Item, int]] = []
    oversized: list[str] = []
    chunk: dict[int, list[dict[str, Any]]] = {}
    used = count = 0

    def emit() -> None:
        nonlocal chunk, used, count
        if chunk:
            part = _document(entry, scopes, chunk)
            out.append((Item(group.key or item_key(part), dumps(part, lenient)), count))
        chunk, used, count = {}, 0, 0

    for j, records in group.by_scope.items():
        for record in records:
            size = len(dumps(record, lenient)) + 1
            if size > budget:
                oversized.append(f"{size} bytes; a Kafka message takes at most {MAX_ITEM_BYTES}")
                continue
            if used + size > budget:
                emit()
            chunk.setdefault(j, []).append(record)
            used += size
            count += 1
    emit()
    return out, oversized


def _document(
    entry: dict[str, Any], scopes: list[Any], by_scope: dict[int, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The export of one `resourceLogs` entry with only the given records of its scopes."""
    resource_logs = {name: value for name, value in entry.items() if name != "scopeLogs"}
    resource_logs["scopeLogs"] = [
        {**{n: v for n, v in scopes[j].items() if n != "logRecords"}, "logRecords": records}
        for j, records in by_scope.items()
    ]
    return {"resourceLogs": [resource_logs]}


def _canonical_ids(record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The record with its ids as lowercase hex, or the problem with one of them."""
    for name, size in _ID_BYTES:
        value = record.get(name)
        if value is None or value == "":
            continue
        hexed = _hex_id(value, size)
        if hexed is None:
            shown = repr(value)[:80]
            return record, f"{name}: expected {size} bytes in hex, got {shown}"
        if hexed != value:
            record = {**record, name: hexed}
    return record, ""


def _hex_id(value: object, size: int) -> str | None:
    if not isinstance(value, str):
        return None
    if _HEX[size].fullmatch(value):
        return value.lower()
    try:  # protobuf's generic JSON mapping writes bytes in base64
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size else None


def _says_hello(record: dict[str, Any]) -> bool:
    body = record.get("body")
    text = body.get("stringValue") if isinstance(body, dict) else None
    return isinstance(text, str) and text.startswith(PREFLIGHT_BODY)


def _string_attribute(attributes: object, name: str) -> str | None:
    """The non-empty string value of attribute `name` in an OTLP `KeyValue` list, or None."""
    if not isinstance(attributes, list):
        return None
    for attribute in attributes:
        if isinstance(attribute, dict) and attribute.get("key") == name:
            value = attribute.get("value")
            text = value.get("stringValue") if isinstance(value, dict) else None
            return text if isinstance(text, str) and text else None
    return None


def _array(value: object, where: str) -> list[Any]:
    if value is None:  # absent, or null, which proto3 JSON reads as the empty default
        return []
    if not isinstance(value, list):
        raise Rejection(400, "malformed", f"body: {where}: expected an array, got {_kind(value)}")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Rejection(400, "malformed", f"body: {where}: expected an object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )
