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

The key of a message is the group's trace id, else its invocation id, else the digest of the
message (`pipeline.formats.identity.item_key`): a sender's retry, and the records of one
invocation that come in separate requests, land on one partition, and so does its trace's
spans (`otlp_traces.py` keys them by the trace id), so that the replica reading them can
complete the invocation with its root span (`pipeline.postgres.completion`). A group larger
than a Kafka message is split into several messages with the same key.

Rejected records (counted in the answer's `partialSuccess`, the others are published):

- a record that is not a JSON object;
- a `traceId` or `spanId` that is neither absent, nor empty, nor 16 or 8 bytes in lowercase
  or uppercase hex (OTLP/JSON's form, written lowercase here) or in base64 (protobuf's generic
  JSON mapping, which some exporters use; rewritten as hex);
- a record that alone is larger than a Kafka message.

A body whose structure is not an export (`resourceLogs`, `scopeLogs` or `logRecords` not an
array, or an entry of the first two not an object) is refused whole with 400. The walk, the
ids and the cutting into messages are the traces receiver's too (otlp_export.py).

Cloudflare's preflight (a `resource` with `service.name = cloudflare-workers-observability`
and a record whose body starts `Hello from Cloudflare`, sent when a destination is created or
changed) is dropped: it must be answered 2xx and is no invocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.collector.otlp_export import (
    LOGS,
    PREFLIGHT_SERVICE,
    ByScope,
    Export,
    Tally,
    canonical_ids,
    string_attribute,
)

INVOCATION_ID = "faas.invocation_id"
PREFLIGHT_BODY = "Hello from Cloudflare"
_ID_BYTES = (("traceId", 16), ("spanId", 8))
_ZERO_TRACE = "0" * 32


@dataclass(slots=True)
class _Group:
    key: bytes | None
    by_scope: ByScope = field(default_factory=dict)


def split(document: dict[str, Any], lenient: bool = False) -> Export:
    """The messages of a parsed export (`lenient`: it may hold lone surrogates)."""
    tally = Tally(LOGS, lenient)
    for entry in tally.entries(document):
        resource_invocation = entry.resource_attribute(INVOCATION_ID)
        probing = entry.resource_attribute("service.name") == PREFLIGHT_SERVICE
        taken: list[tuple[int, dict[str, Any], str | None]] = []
        for j, where, record in entry.items:
            record, problem = canonical_ids(record, _ID_BYTES)
            if problem:
                tally.reject(where, problem)
                continue
            if probing and _says_hello(record):
                tally.preflight += 1
                continue
            invocation = string_attribute(record.get("attributes"), INVOCATION_ID)
            taken.append((j, record, invocation or resource_invocation))
        for group in _groups(taken).values():
            tally.publish(entry, group.by_scope, group.key)
    return tally.export()


def _groups(taken: list[tuple[int, dict[str, Any], str | None]]) -> dict[tuple[str, ...], _Group]:
    """The invocation groups of one `resourceLogs` entry's records (scope index, record, its
    invocation id), in the order they first appear.

    A record without an invocation id joins the invocation of a record with the same trace id;
    one without a trace id either joins the entry's invocation when it has only one:
    Cloudflare's `console.*` records carry only `name` and a sequence number, and the
    invocation log beside them carries the id. The others group by trace and span, and those
    with neither form the entry's own group."""
    by_trace: dict[str, str] = {}
    traces: dict[str, str] = {}  # an invocation's first trace id: its messages' key
    for _, record, invocation in taken:
        trace = _trace(record)
        if invocation and trace:
            by_trace.setdefault(trace, invocation)
            traces.setdefault(invocation, trace)
    invocations = {invocation for _, _, invocation in taken if invocation}
    only = next(iter(invocations)) if len(invocations) == 1 else None
    groups: dict[tuple[str, ...], _Group] = {}
    for j, record, invocation in taken:
        trace = _trace(record)
        invocation = invocation or (by_trace.get(trace) if trace else only)
        identity: tuple[str, ...]
        if invocation:
            identity, key = ("invocation", invocation), traces.get(invocation, invocation).encode()
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


def _says_hello(record: dict[str, Any]) -> bool:
    body = record.get("body")
    text = body.get("stringValue") if isinstance(body, dict) else None
    return isinstance(text, str) and text.startswith(PREFLIGHT_BODY)
