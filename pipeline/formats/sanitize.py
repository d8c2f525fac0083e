"""Text that PostgreSQL can hold: U+0000 and lone surrogates become U+FFFD.

PostgreSQL refuses two things any JavaScript string may contain: U+0000 in `text` (and the
`\\u0000` escape in `jsonb`), and UTF-16 surrogates that are not part of a pair (a string cut
in the middle of an emoji; `JSON.stringify` writes one as `\\ud83d`). Refusing them would lose
the whole invocation for one character, and the repair is not a guess: both are replaced by
U+FFFD, the character Unicode reserves for "a character was here that could not be kept". So a
Worker that logs binary data or a sliced string is stored whole, and the replacement is
counted by column (`tailpipe_sanitized_total{field}`).

Fast by construction: a message can only hold either if its JSON text has a `\\u0000` escape
(JSON cannot carry a raw NUL in a string) or if it needs `loads`' lenient path (orjson refuses
lone surrogates, the standard library's parser keeps them). `decode` tests for those, once per
message, in C, and walks the invocations (`storable`) only when one is there.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import orjson

from pipeline.formats.invocation import JSON, ExceptionInfo, Invocation, LogLine, Span

REPLACEMENT = "\ufffd"
FIELDS = (
    "script", "outcome", "method", "url", "message", "data", "kind", "exception_name", "stack",
    "script_version", "entrypoint", "dispatch_namespace", "script_tags", "extra",
    "trace_id", "span_id",
)  # fmt: skip
"""The columns a repaired value can land in: the `field` label's whole set. An invalid trace or
span id is the one repair that stores NULL (`pipeline.formats.trace_context`)."""
NUL_ESCAPE = b"\\u0000"

# Built from chr(): a compiled module cannot hold a lone surrogate in a string literal.
_UNSTORABLE = re.compile(f"[\x00{chr(0xD800)}-{chr(0xDFFF)}]")


def clean(text: str) -> str:
    """`text` with every U+0000 and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def loads(data: bytes | str) -> tuple[JSON, bool]:
    """`(value, lenient)`: orjson's parse, or, for JSON that escapes a lone surrogate (which
    orjson refuses), the standard library's, which keeps it for `storable` to replace. Any
    other error is orjson's `JSONDecodeError`, as before; `lenient` says the value may hold
    surrogates."""
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError as error:
        if "surrogate" not in str(error):
            raise
        try:
            return json.loads(data, parse_constant=_refuse_constant), True
        except (ValueError, RecursionError):
            raise error from None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: orjson refuses them, so the lenient path must as well.
    raise ValueError(f"{name} is not JSON")


def suspect(value: bytes) -> bool:
    """Whether a message's JSON text may hold a NUL: the only way to write one is `\\u0000`."""
    return NUL_ESCAPE in value


def storable(inv: Invocation) -> Invocation:
    """`inv` with every string PostgreSQL would refuse repaired, and the columns repaired named
    in `sanitized` (once per value); `inv` itself when nothing needed it."""
    fixed: list[str] = []

    def text(value: str | None, name: str) -> str | None:
        if value is None or not _UNSTORABLE.search(value):
            return value
        fixed.append(name)
        return clean(value)

    def document(value: Any, name: str) -> Any:
        cleaned = _json(value)
        if cleaned is not value:
            fixed.append(name)
        return cleaned

    logs = tuple(
        LogLine(
            line.timestamp_ms, line.level, text(line.text, "message") or "",
            None if line.data is None else document(line.data, "data"), text(line.kind, "kind"),
        )
        for line in inv.logs
    )  # fmt: skip
    exceptions = tuple(
        ExceptionInfo(
            e.timestamp_ms, text(e.name, "exception_name") or "", text(e.message, "message") or "",
            text(e.stack, "stack"), text(e.reported_name, "exception_name"),
        )
        for e in inv.exceptions
    )  # fmt: skip
    tags = document(inv.script_tags, "script_tags")
    changed = replace(
        inv,
        script=text(inv.script, "script"),
        outcome=text(inv.outcome, "outcome") or "",
        method=text(inv.method, "method"),
        url=text(inv.url, "url"),
        logs=logs,
        exceptions=exceptions,
        script_version=text(inv.script_version, "script_version"),
        entrypoint=text(inv.entrypoint, "entrypoint"),
        dispatch_namespace=text(inv.dispatch_namespace, "dispatch_namespace"),
        script_tags=tuple(tags),
        extra=document(inv.extra, "extra"),
    )
    if not fixed:
        return inv
    return replace(changed, sanitized=(*inv.sanitized, *fixed))


def storable_span(span: Span) -> tuple[Span, list[str]]:
    """`span` with every string PostgreSQL would refuse repaired, and the columns repaired (ids
    are hex, and the numbers numbers: only texts and documents can hold one)."""
    fixed: list[str] = []
    values: dict[str, Any] = {}
    for name in ("name", "status_message", "script", "invocation_id"):
        value = getattr(span, name)
        if value is not None and _UNSTORABLE.search(value):
            fixed.append(name)
            values[name] = clean(value)
    for name in ("attributes", "resource", "events", "links"):
        value = getattr(span, name)
        cleaned = _json(value)
        if cleaned is not value:
            fixed.append(name)
            values[name] = cleaned
    return (replace(span, **values) if values else span), fixed


def _json(value: Any) -> Any:
    """A JSON value with its strings (keys too) repaired; the same object when none needed it,
    so the caller can tell. Recursion is bounded: decode refuses nesting over MAX_DEPTH."""
    if type(value) is str:
        return clean(value) if _UNSTORABLE.search(value) else value
    if type(value) is dict:
        out = {}
        changed = False
        for key, item in value.items():
            new_key, new_item = _json(key), _json(item)
            changed = changed or new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    if type(value) is list or type(value) is tuple:
        items = [_json(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if type(value) is list else tuple(items)
    return value


def storable_json(value: Any) -> Any:
    """A JSON value with its strings (keys too) repaired; the same object when none needed it."""
    return _json(value)


def dumps(value: JSON, lenient: bool) -> bytes:
    """Compact JSON of a value `loads` returned. orjson cannot write a lone surrogate, so a
    lenient value is written by the standard library with everything past ASCII escaped: its
    surrogates stay escapes, for the consumer's decoder to repair and count."""
    if not lenient:
        return orjson.dumps(value)
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()
