"""The events of streaming Tail Workers (`tailStream`), grouped into one message per invocation.

The runtime hands a streaming Tail Worker one event at a time (onset first, outcome last), so
a forwarder posts whatever it has buffered: events of several invocations, and one invocation's
events over several posts. The consumer can only tell what an invocation did once it sees its
events together, so they are grouped here by `invocationId` and each group is published keyed
by that id: every post of one invocation lands on one partition, in the order it was posted,
and within a group the order of the request (the runtime's, which a forwarder keeps) is kept.
A group too large for one Kafka message is cut into consecutive messages with the same key.

The runtime names no script in the onset locally (nor, so far, in every build), so the
forwarder says which Worker it tails in the `script` query parameter, published beside the
events. Envelopes are published as they came, re-serialised compactly (a lone surrogate escape
kept for the consumer to repair, as on `/v1/tail`), and every message must decode
(pipeline.formats.decode), so a request is published entirely or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from pipeline.collector.items import MAX_ITEM_BYTES, Batch, Item, kind
from pipeline.collector.rejection import Rejection
from pipeline.errors import DecodeError
from pipeline.formats.decode import decode
from pipeline.formats.sanitize import dumps, loads

ROUTE = "/v1/tail-stream"
SCRIPT = "script"
"""The query parameter naming the producer Worker."""
MAX_SCRIPT_BYTES = 255
"""Past any Worker name Cloudflare allows (63 characters), well inside an index key."""
MAX_INVOCATION_ID_CHARS = 128
"""The runtime's ids are 32 hex digits; this leaves room without letting a key grow large."""
HEAD = b'{"tailStream":['
"""How every message starts: `{"tailStream": [envelopes...], "script": <name or null>}`."""
_DECODED_AT = re.compile(r"tailStream\[(\d+)\]\.?")
"""The decoder's path to an envelope of a message, turned into the request's item."""

Parser = Callable[[bytes], Batch]
Envelope = tuple[int, bytes]
"""An envelope's index in the request and its compact JSON."""


def parser(query: Sequence[tuple[str, str]]) -> Parser:
    """The body's parser for a request with this query string (its `script`); 400 for a bad
    `script`, before the body is read."""
    script = _script(query)
    return lambda body: parse(body, script)


def parse(body: bytes, script: str | None) -> Batch:
    """An envelope or an array of them -> one message per invocation (more for a large one),
    in the order each invocation first appears in the request."""
    try:
        document, lenient = loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed", f"body: not JSON ({exc})") from None
    if isinstance(document, dict):
        document = [document]
    elif not isinstance(document, list):
        raise Rejection(
            400,
            "invalid",
            f"body: expected an array of event envelopes or one envelope, got {kind(document)}",
        )
    groups: dict[str, list[Envelope]] = {}
    for index, envelope in enumerate(document):
        invocation = _invocation_id(envelope, index)
        groups.setdefault(invocation, []).append((index, dumps(envelope, lenient)))
    tail = b'],"script":' + dumps(script, False) + b"}"
    items = []
    for invocation, envelopes in groups.items():
        for run in _runs(envelopes, len(HEAD) + len(tail)):
            value = HEAD + b",".join(json for _, json in run) + tail
            _check(value, invocation, [index for index, _ in run])
            items.append(Item(invocation.encode(), value))
    return Batch(items)


def _script(query: Sequence[tuple[str, str]]) -> str | None:
    given = [value for name, value in query if name == SCRIPT]
    if not given:
        return None
    if len(given) > 1:
        raise _bad_script(f"given {len(given)} times; give it once")
    [script] = given
    if not script:
        raise _bad_script("empty; leave the parameter out when the Worker's name is unknown")
    if not _encodable(script):
        raise _bad_script("not Unicode text (a lone surrogate)")
    size = len(script.encode())
    if size > MAX_SCRIPT_BYTES:
        raise _bad_script(f"{size} bytes of UTF-8; a Worker's name has at most {MAX_SCRIPT_BYTES}")
    return script


def _bad_script(problem: str) -> Rejection:
    return Rejection(400, "invalid", f"query: {SCRIPT}: {problem}", field=SCRIPT, problem=problem)


def _invocation_id(envelope: Any, index: int) -> str:
    if not isinstance(envelope, dict):
        raise Rejection(
            400,
            "invalid",
            f"item {index}: expected an event envelope (a JSON object), got {kind(envelope)}",
            item=index,
        )
    value = envelope.get("invocationId")
    if value is None:
        problem = "missing; every event names its invocation"
    elif not isinstance(value, str):
        problem = f"expected a string, got {kind(value)}"
    elif not value:
        problem = "empty"
    elif len(value) > MAX_INVOCATION_ID_CHARS:
        problem = f"{len(value)} characters; at most {MAX_INVOCATION_ID_CHARS}"
    elif not _encodable(value):
        problem = "not Unicode text (a lone surrogate)"
    else:
        return value
    raise Rejection(
        400,
        "invalid",
        f"item {index}: invocationId: {problem}",
        item=index,
        field="invocationId",
        problem=problem,
    )


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _runs(envelopes: list[Envelope], overhead: int) -> list[list[Envelope]]:
    """`envelopes` cut into consecutive runs, each fitting one message with `overhead` bytes
    around it and a comma between two envelopes. An envelope too large alone is a run of its
    own, for `_check` to refuse."""
    runs: list[list[Envelope]] = [[]]
    size = overhead
    for envelope in envelopes:
        added = len(envelope[1]) + (1 if runs[-1] else 0)
        if runs[-1] and size + added > MAX_ITEM_BYTES:
            runs.append([])
            size, added = overhead, len(envelope[1])
        runs[-1].append(envelope)
        size += added
    return runs


def _check(value: bytes, invocation: str, indices: list[int]) -> None:
    if len(value) > MAX_ITEM_BYTES:
        [index] = indices  # only a lone envelope makes a run this large
        raise Rejection(
            413,
            "too_large",
            f"item {index}: {len(value)} bytes as a message; a Kafka message takes at most "
            f"{MAX_ITEM_BYTES}",
            item=index,
        )
    try:
        decode(value)
    except DecodeError as exc:
        raise _refused(exc, invocation, indices) from None


def _refused(exc: DecodeError, invocation: str, indices: list[int]) -> Rejection:
    """The decoder's refusal of a message, naming the request's item where the decoder named
    an envelope: `tailStream[2].event.type` of a message is the field `event.type` of the
    item that is that message's third envelope."""
    found = _DECODED_AT.match(exc.field)
    if found is not None and int(found[1]) < len(indices):
        index = indices[int(found[1])]
        field = exc.field[found.end() :] or "$"
        where = f"item {index}: {field}"
    else:
        index, field = indices[0], exc.field
        where = f"the events of invocation {invocation} (items {_listed(indices)}): {field}"
    return Rejection(
        400,
        "invalid",
        f"{where}: {exc.problem}",
        item=index,
        field=field,
        problem=exc.problem,
    )


def _listed(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:5]))
    return shown + (f" and {len(indices) - 5} more" if len(indices) > 5 else "")
