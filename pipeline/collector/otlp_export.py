"""What the OTLP receivers share: an export's shape, its ids, and its cutting into messages.

OTLP's logs and traces exports have one shape: an array of resource entries (`resourceLogs`,
`resourceSpans`), each a `resource` and an array of scope entries (`scopeLogs`, `scopeSpans`),
each a `scope` and an array of items (`logRecords`, `spans`). What differs between the signals
is which items travel together (otlp_logs.py: an invocation's records; otlp_traces.py: a
trace's spans) and which items are unusable. The rest lives here once, so that both receivers
refuse, describe and cut an export alike:

- the walk that checks the shape: a body that is not an export is refused whole with 400, an
  item that is not an object is rejected alone;
- the tally of one request: its messages, and the rejected items with the first few problems,
  for the answer's `partialSuccess`;
- ids, which OTLP/JSON writes in hex and protobuf's generic JSON mapping in base64: both are
  read, lowercase hex is written;
- a group's message: one resource entry holding only the group's items under their own
  scopes, or, when that exceeds a Kafka message, several with the group's key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.collector.items import MAX_ITEM_BYTES, Item
from pipeline.collector.rejection import Rejection
from pipeline.formats.identity import item_key
from pipeline.formats.sanitize import dumps

SHOWN_PROBLEMS = 3
"""How many rejected items the answer's `errorMessage` describes."""
PREFLIGHT_SERVICE = "cloudflare-workers-observability"
"""The `service.name` of the resource of Cloudflare's destination checks."""
_HEX = {16: re.compile(r"[0-9a-fA-F]{32}"), 8: re.compile(r"[0-9a-fA-F]{16}")}

ByScope = dict[int, list[dict[str, Any]]]
"""A group's items by the index of their scope entry, in the order of the export."""


@dataclass(frozen=True, slots=True)
class Signal:
    """The names one OTLP signal gives the three levels of its export."""

    resources: str
    scopes: str
    items: str
    noun: str
    """The items in an answer's `errorMessage`: "log records", "spans"."""
    one: str
    """One item in a problem's place: "record", "span"."""


LOGS = Signal("resourceLogs", "scopeLogs", "logRecords", "log records", "record")
TRACES = Signal("resourceSpans", "scopeSpans", "spans", "spans", "span")


@dataclass(frozen=True, slots=True)
class Export:
    """What one request gives: the messages to publish, and what was left out."""

    signal: Signal
    items: list[Item]
    records: int
    """Log records or spans in `items`."""
    rejected: int
    problems: list[str]
    """Where and why, for the first `SHOWN_PROBLEMS` rejected items."""
    preflight: int
    """Cloudflare destination checks dropped."""

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = self.rejected - len(self.problems)
        tail = f"; and {more} more" if more > 0 else ""
        return f"{self.rejected} {self.signal.noun} rejected: {'; '.join(self.problems)}{tail}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource entry of an export, its shape checked."""

    where: str
    """Its place, `resourceSpans[2]`, which the problems of its items start with."""
    value: dict[str, Any]
    scopes: list[dict[str, Any]]
    items: list[tuple[int, str, dict[str, Any]]]
    """Every item that is an object: the index of its scope entry, its place, the item."""

    def resource_attribute(self, name: str) -> str | None:
        resource = self.value.get("resource")
        return string_attribute(
            resource.get("attributes") if isinstance(resource, dict) else None, name
        )


@dataclass(slots=True)
class Tally:
    """One request's export being cut into messages (`lenient`: it may hold lone surrogates)."""

    signal: Signal
    lenient: bool
    items: list[Item] = field(default_factory=list)
    records: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    preflight: int = 0

    def entries(self, document: dict[str, Any]) -> Iterator[Entry]:
        """The resource entries, each checked as it comes; an item that is not an object is
        rejected here, a level that is not an array or an entry that is not an object
        refuses the whole body (400)."""
        names = self.signal
        for i, value in enumerate(array(document.get(names.resources), names.resources)):
            where = f"{names.resources}[{i}]"
            entry = object_at(value, where)
            scopes: list[dict[str, Any]] = []
            items: list[tuple[int, str, dict[str, Any]]] = []
            for j, scope in enumerate(array(entry.get(names.scopes), f"{where}.{names.scopes}")):
                scopes.append(object_at(scope, f"{where}.{names.scopes}[{j}]"))
                path = f"{where}.{names.scopes}[{j}].{names.items}"
                for k, item in enumerate(array(scopes[j].get(names.items), path)):
                    if isinstance(item, dict):
                        items.append((j, f"{path}[{k}]", item))
                    else:
                        self.reject(f"{path}[{k}]", "not an object")
            yield Entry(where, entry, scopes, items)

    def reject(self, where: str, problem: str) -> None:
        self.rejected += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(f"{where}: {problem}")

    def publish(self, entry: Entry, by_scope: ByScope, key: bytes | None) -> None:
        """Add a group's message, keyed by `key`, else by the message's digest; several when it
        exceeds a Kafka message, and an item too large for one alone is rejected."""
        document = self._document(entry, by_scope)
        value = dumps(document, self.lenient)
        if len(value) <= MAX_ITEM_BYTES:
            self.items.append(Item(key or item_key(document), value))
            self.records += sum(map(len, by_scope.values()))
            return
        # Every scope of the group with no item: a chunk holds a subset of them, so this bounds
        # its frame from above, and each item costs its own size and a comma.
        frame = len(dumps(self._document(entry, {j: [] for j in by_scope}), self.lenient))
        budget = MAX_ITEM_BYTES - frame
        sized: dict[int, list[tuple[dict[str, Any], int]]] = {}
        for j, items in by_scope.items():
            for item in items:
                size = len(dumps(item, self.lenient)) + 1
                if size <= budget:
                    sized.setdefault(j, []).append((item, size))
                    continue
                self.reject(
                    f"{entry.where}: a {self.signal.one} of group {key!r}",
                    f"{size} bytes; a Kafka message takes at most {MAX_ITEM_BYTES}",
                )
        kept = {j: [item for item, _ in pairs] for j, pairs in sized.items()}
        if sum(map(len, kept.values())) < sum(map(len, by_scope.values())):
            # The rest may fit in one message after all. Nothing more is rejected then: with
            # fewer scopes the frame is no larger.
            if kept:
                self.publish(entry, kept, key)
            return
        chunk: ByScope = {}
        used = 0
        for j, pairs in sized.items():
            for item, size in pairs:
                if used + size > budget:
                    self._emit(entry, chunk, key)
                    chunk, used = {}, 0
                chunk.setdefault(j, []).append(item)
                used += size
        self._emit(entry, chunk, key)

    def export(self) -> Export:
        return Export(
            self.signal, self.items, self.records, self.rejected, self.problems, self.preflight
        )

    def _emit(self, entry: Entry, chunk: ByScope, key: bytes | None) -> None:
        if chunk:
            part = self._document(entry, chunk)
            self.items.append(Item(key or item_key(part), dumps(part, self.lenient)))
            self.records += sum(map(len, chunk.values()))

    def _document(self, entry: Entry, by_scope: ByScope) -> dict[str, Any]:
        """The export of one resource entry with only the given items of its scopes."""
        names = self.signal
        resource = {name: value for name, value in entry.value.items() if name != names.scopes}
        resource[names.scopes] = [
            {**{n: v for n, v in entry.scopes[j].items() if n != names.items}, names.items: items}
            for j, items in by_scope.items()
        ]
        return {names.resources: [resource]}


def canonical_ids(
    item: dict[str, Any], ids: tuple[tuple[str, int], ...]
) -> tuple[dict[str, Any], str]:
    """`item` with its ids (name, bytes) as lowercase hex, or the problem with one of them. An
    absent or empty id is left as it is: whether one is required is the signal's to say."""
    for name, size in ids:
        value = item.get(name)
        if value is None or value == "":
            continue
        hexed = hex_id(value, size)
        if hexed is None:
            return item, f"{name}: expected {size} bytes in hex, got {repr(value)[:80]}"
        if hexed != value:
            item = {**item, name: hexed}
    return item, ""


def hex_id(value: object, size: int) -> str | None:
    """An id of `size` bytes as lowercase hex, from hex in any case or from base64; else None."""
    if not isinstance(value, str):
        return None
    if _HEX[size].fullmatch(value):
        return value.lower()
    try:  # protobuf's generic JSON mapping writes bytes in base64
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size else None


def string_attribute(attributes: object, name: str) -> str | None:
    """The non-empty string value of attribute `name` in an OTLP `KeyValue` list, or None."""
    if not isinstance(attributes, list):
        return None
    for attribute in attributes:
        if isinstance(attribute, dict) and attribute.get("key") == name:
            value = attribute.get("value")
            text = value.get("stringValue") if isinstance(value, dict) else None
            return text if isinstance(text, str) and text else None
    return None


def array(value: object, where: str) -> list[Any]:
    if value is None:  # absent, or null, which proto3 JSON reads as the empty default
        return []
    if not isinstance(value, list):
        raise Rejection(400, "malformed", f"body: {where}: expected an array, got {kind(value)}")
    return value


def object_at(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Rejection(400, "malformed", f"body: {where}: expected an object, got {kind(value)}")
    return value


def kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )
