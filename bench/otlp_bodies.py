"""The OTLP benchmark's request bodies: Cloudflare-shaped logs and traces, in each encoding.

A `Shape` is one signal's fixture entry (tests/fixtures/otlp/) cut into the items a unit repeats:
an invocation's records (logs) or a trace's spans (traces). Every unit of every request gets its
own invocation, ray, trace and span ids and its times shifted to now, so the collector and Kafka
get distinct invocations and traces, as from Cloudflare, not one fixture over and over.

The same content is built as OTLP/JSON (`json`, and `gzip`: the same compressed) and as
protobuf; the protobuf entry is parsed once from the JSON template and copied and changed in
place per unit. `bench/otlp.py` builds a case's bodies before timing it, so the timed requests
measure sending and the collector, not building.
"""

from __future__ import annotations

import base64
import copy
import gzip
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "otlp"
GZIP_LEVEL = 6  # zlib's default, what an HTTP client's gzip usually is

# OTLP/JSON field -> protobuf field, for the times shifted per invocation or trace.
_TIMES = {
    "timeUnixNano": "time_unix_nano",
    "observedTimeUnixNano": "observed_time_unix_nano",
    "startTimeUnixNano": "start_time_unix_nano",
    "endTimeUnixNano": "end_time_unix_nano",
}


@dataclass(frozen=True, slots=True)
class Unit:
    """The ids and time of one invocation (logs) or one trace (traces)."""

    invocation: str
    ray: str
    trace: str
    span: str
    """The invocation's span (logs: every record's), or the trace's root span."""
    children: tuple[str, ...]
    """Span ids of the child spans (traces)."""
    shift_ns: int
    """Added to every time of the fixture."""


@dataclass(frozen=True, slots=True)
class Item:
    """One log record or span of an entry's template, and what changes per unit."""

    template: dict[str, Any]
    child: int | None
    """None: the unit's own span (a log record, the root span); else the child span's index,
    whose parent is the unit's span."""
    attributes: dict[int, str]
    """Attribute index -> "invocation" or "ray": the ids carried as attributes."""


def _retimed(value: Any, shift_ns: int) -> Any:
    """A time shifted, in the form it had (OTLP/JSON allows a string or a number)."""
    return str(int(value) + shift_ns) if isinstance(value, str) else int(value) + shift_ns


def _attribute_ids(template: dict[str, Any]) -> dict[int, str]:
    wanted = {"faas.invocation_id": "invocation", "cloudflare.ray_id": "ray"}
    return {
        i: wanted[a["key"]]
        for i, a in enumerate(template.get("attributes", ()))
        if a.get("key") in wanted
    }


@dataclass(slots=True)
class Shape:
    """One signal's request: `batch` resource entries, each one unit's items, as OTLP/JSON and
    as protobuf, from one fixture entry."""

    signal: str
    entry: dict[str, Any]
    """The fixture's resource entry, without its items."""
    items: list[Item]
    base_ns: int
    uuid_ids: bool
    """Invocation ids as UUIDs (Cloudflare's traces) rather than 32 hex digits (its logs)."""
    resources: str = ""
    scopes: str = ""
    records: str = ""
    proto_entry: Message | None = None
    proto_request: type[Message] | None = None
    children: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.signal == "logs":
            self.resources, self.scopes, self.records = "resourceLogs", "scopeLogs", "logRecords"
            self.proto_request = logs_service_pb2.ExportLogsServiceRequest
            entry_type: type[Message] = logs_pb2.ResourceLogs
        else:
            self.resources, self.scopes, self.records = "resourceSpans", "scopeSpans", "spans"
            self.proto_request = trace_service_pb2.ExportTraceServiceRequest
            entry_type = trace_pb2.ResourceSpans
        self.children = sum(1 for item in self.items if item.child is not None)
        # The protobuf template: this entry as JSON (shift 0, the fixture's ids), its ids in
        # base64 as protobuf's JSON mapping reads bytes; each unit's copy is changed in place.
        template = self.json_entry(self.unit(random.Random(0), 0, shift=False))
        for item in template[self.scopes][0][self.records]:
            for name in ("traceId", "spanId", "parentSpanId"):
                if name in item:
                    item[name] = base64.b64encode(bytes.fromhex(item[name])).decode()
        self.proto_entry = json_format.ParseDict(template, entry_type())

    @property
    def records_per_unit(self) -> int:
        return len(self.items)

    def unit(self, rng: random.Random, now_ns: int, shift: bool = True) -> Unit:
        invocation = (
            str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if self.uuid_ids
            else f"{rng.getrandbits(128):032x}"
        )
        return Unit(
            invocation=invocation,
            ray=f"{rng.getrandbits(64):016x}",
            trace=f"{rng.getrandbits(128):032x}",
            span=f"{rng.getrandbits(64):016x}",
            children=tuple(f"{rng.getrandbits(64):016x}" for _ in range(self.children)),
            shift_ns=now_ns - self.base_ns if shift else 0,
        )

    def json_entry(self, unit: Unit) -> dict[str, Any]:
        values = {"invocation": unit.invocation, "ray": unit.ray}
        items = []
        for item in self.items:
            record = dict(item.template)
            for name in _TIMES:
                if name in record:
                    record[name] = _retimed(record[name], unit.shift_ns)
            record["traceId"] = unit.trace
            if item.child is None:
                record["spanId"] = unit.span
            else:
                record["spanId"] = unit.children[item.child]
                record["parentSpanId"] = unit.span
            if item.attributes:
                record["attributes"] = [
                    {"key": a["key"], "value": {"stringValue": values[item.attributes[i]]}}
                    if i in item.attributes
                    else a
                    for i, a in enumerate(record["attributes"])
                ]
            if "events" in record:
                record["events"] = [
                    {**e, "timeUnixNano": _retimed(e["timeUnixNano"], unit.shift_ns)}
                    for e in record["events"]
                ]
            items.append(record)
        scope = {**self.entry[self.scopes][0], self.records: items}
        return {**self.entry, self.scopes: [scope]}

    def proto_fill(self, request: Any, unit: Unit) -> None:
        """Append the unit's entry to a protobuf request: the template changed in place."""
        entries = request.resource_logs if self.signal == "logs" else request.resource_spans
        entry = entries.add()
        entry.CopyFrom(self.proto_entry)
        scope = entry.scope_logs[0] if self.signal == "logs" else entry.scope_spans[0]
        messages = scope.log_records if self.signal == "logs" else scope.spans
        values = {"invocation": unit.invocation, "ray": unit.ray}
        trace, span = bytes.fromhex(unit.trace), bytes.fromhex(unit.span)
        for item, message in zip(self.items, messages, strict=True):
            for name, proto_name in _TIMES.items():
                if name in item.template:
                    setattr(message, proto_name, getattr(message, proto_name) + unit.shift_ns)
            message.trace_id = trace
            if item.child is None:
                message.span_id = span
            else:
                message.span_id = bytes.fromhex(unit.children[item.child])
                message.parent_span_id = span
            for i, which in item.attributes.items():
                message.attributes[i].value.string_value = values[which]
            for event in getattr(message, "events", ()):
                event.time_unix_nano += unit.shift_ns

    def bodies(
        self, n: int, batch: int, encoding: str, rng: random.Random
    ) -> tuple[list[bytes], int]:
        """`n` request bodies of `batch` fresh units each, and their total size in bytes."""
        out: list[bytes] = []
        now_ns = time.time_ns()
        for r in range(n):
            units = [self.unit(rng, now_ns + (r * batch + u) * 1_000_000) for u in range(batch)]
            if encoding == "protobuf":
                assert self.proto_request is not None
                request = self.proto_request()
                for unit in units:
                    self.proto_fill(request, unit)
                out.append(request.SerializeToString())
                continue
            raw = orjson.dumps({self.resources: [self.json_entry(unit) for unit in units]})
            out.append(gzip.compress(raw, GZIP_LEVEL) if encoding == "gzip" else raw)
        return out, sum(len(b) for b in out)


def logs_shape(console: int) -> Shape:
    """One Workers invocation per `resourceLogs` entry: its invocation record and `console`
    console records cycling through the fixture's, numbered in sequence after it."""
    document = orjson.loads((FIXTURES / "cloudflare_fetch.json").read_bytes())
    entry = document["resourceLogs"][0]
    records = entry["scopeLogs"][0]["logRecords"]
    invocation, consoles = records[0], records[1:]
    items = [Item(invocation, None, _attribute_ids(invocation))]
    for k in range(console):
        record = copy.deepcopy(consoles[k % len(consoles)])
        for attribute in record.get("attributes", ()):
            if attribute["key"] == "cloudflare.invocation.sequence.number":
                attribute["value"] = {"intValue": k + 2}
        items.append(Item(record, None, {}))
    entry = {**entry, "scopeLogs": [{**entry["scopeLogs"][0], "logRecords": []}]}
    return Shape("logs", entry, items, int(invocation["timeUnixNano"]), uuid_ids=False)


def traces_shape(spans: int) -> Shape:
    """One trace per `resourceSpans` entry: the fixture's root span and `spans` - 1 children
    cycling through the fixture's (KV, an outbound fetch, a failing D1 query)."""
    document = orjson.loads((FIXTURES / "cloudflare_trace.json").read_bytes())
    entry = document["resourceSpans"][0]
    found = entry["scopeSpans"][0]["spans"]
    root, children = found[0], found[1:]
    items = [Item(root, None, _attribute_ids(root))]
    for k in range(spans - 1):
        child = children[k % len(children)]
        items.append(Item(child, k, _attribute_ids(child)))
    entry = {**entry, "scopeSpans": [{**entry["scopeSpans"][0], "spans": []}]}
    return Shape("traces", entry, items, int(root["startTimeUnixNano"]), uuid_ids=True)
