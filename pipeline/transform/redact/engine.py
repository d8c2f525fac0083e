"""Redaction applied: the entry points, which run the rules a text needs (`triggers`) and
judge JSON keys and headers by name (`names`). Each takes an optional `collections.Counter` for
the counts per rule:

- `redact_text(text)`: free text (log messages, exception messages and stacks);
- `redact_url(url)`: a URL (userinfo passwords, secret query or fragment parameters, tokens);
- `redact_headers(headers)`: a header mapping; secret headers lose their value;
- `redact_json(value)`: any JSON-like value; a key that names a secret (`is_secret_name`) has
  its value replaced whatever it is, and every string (keys included) is text-redacted.

Redaction is idempotent: markers are never matched again, so stored text can be re-redacted
when a rule is added.

Its own room: what runs on every value (the hot path: every log line, every field of a record),
apart from what is built once at import (`rules`, `triggers`). Here are the walk over JSON
values, the handling of headers and keys, and the caches that let the same keys and short texts
skip the rules when they come back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

from pipeline.transform.redact.names import is_secret_name
from pipeline.transform.redact.rules import FIELD, HEADER, MARKER, Counts, is_marker
from pipeline.transform.redact.triggers import first_trigger, plan, rules_for, rules_for_utf8


def has_trigger(lowered: str) -> bool:
    """Whether lower-cased text contains a trigger of some rule: without one, no rule can
    match and no name is a secret name, so redaction changes nothing."""
    return first_trigger(lowered) is not None


def needs_redaction(text: str) -> bool:
    """`has_trigger(text.lower())`, without lower-casing where the native core is installed."""
    return rules_for(text) != 0


def needs_redaction_utf8(data: bytes) -> bool:
    """The same for UTF-8 bytes, such as a whole JSON document from orjson."""
    return rules_for_utf8(data) != 0


def redact_text(text: str, counts: Counts | None = None) -> str:
    """`text` with every secret replaced by its rule's marker."""
    mask = rules_for(text)
    if not mask:
        return text  # the fast path: most log lines
    if len(text) > _CACHED_LENGTH:
        return _apply_rules(text, mask, counts)
    redacted, found = _redact_cached(text)
    if found and counts is not None:
        counts.update(found)
    return redacted


_CACHED_LENGTH = 256
"""Texts up to this long that reach the rules are cached with the redactions made: the same
URLs and templated lines (`llm usage ... input_tokens=...`) come back over and over."""


@lru_cache(maxsize=16384)
def _redact_cached(text: str) -> tuple[str, Counts]:
    found: Counts = Counter()
    return _apply_rules(text, rules_for(text), found), found


def _apply_rules(text: str, mask: int, counts: Counts | None) -> str:
    """The rules `mask` selects, applied in order. Which rules run is decided on the original
    text: a marker never adds one."""
    for rule in plan(mask):
        text = rule(text, counts)
    return text


def redact_url(url: str, counts: Counts | None = None) -> str:
    """A URL with its userinfo password, secret query and fragment parameters and any token in
    it redacted. The URL rules are text rules, so URLs inside log messages get the same."""
    return redact_text(url, counts)


def redact_headers(headers: Mapping[str, Any], counts: Counts | None = None) -> dict[str, str]:
    """A copy of `headers`: secret headers' values replaced (an auth scheme such as `Bearer`
    kept), the others text-redacted. Names are kept as given."""
    out: dict[str, str] = {}
    for name, raw in headers.items():
        value = raw if type(raw) is str else _text_of(raw)
        key = str(name)
        if is_secret_name(key):
            out[name] = _conceal_header(value, "authorization" in key.lower(), counts)
        else:
            out[name] = redact_text(value, counts)
    return out


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9_\-]*\s+)(\S.*)", re.DOTALL)


def _conceal_header(value: str, keep_scheme: bool, counts: Counts | None) -> str:
    """A secret header's value replaced; `Authorization`-like headers keep their scheme
    (`Bearer`, `Basic`, `AWS4-HMAC-SHA256`): which kind of credential was sent is useful."""
    if not value or is_marker(value):
        return value
    recognised = _recognised(value, counts, keep_scheme)
    if recognised is not None:
        return recognised
    marker = MARKER.format(HEADER)
    scheme = _SCHEME.fullmatch(value) if keep_scheme else None
    if scheme is not None:
        if is_marker(scheme.group(2)):
            return value
        value = scheme.group(1) + marker
    else:
        value = marker
    if counts is not None:
        counts[HEADER] += 1
    return value


_MAX_DEPTH = 200
"""Deeper values are replaced whole: the input may be hostile and Python recursion is finite."""


def redact_json(value: Any, counts: Counts | None = None) -> Any:
    """A redacted copy of a JSON-like value (dicts, lists, tuples, strings, numbers, booleans,
    None). Other objects become text first (datetimes as ISO 8601, others via `str`): a
    secret must not hide in an object's text form. The input is never modified."""
    return _walk(value, counts, 0)


def _walk(value: Any, counts: Counts | None, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return redact_text(value, counts)
    if value is None or kind is bool or kind is int or kind is float:
        return value
    if depth >= _MAX_DEPTH:
        return "[TRUNCATED:depth]"
    if kind is dict or isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if type(key) is str:
                key, secret, found = _key(key)
                if found and counts is not None:
                    counts.update(found)
            else:
                secret = False
            out[key] = _conceal(item, counts) if secret else _walk(item, counts, depth + 1)
        return out
    if kind is list or kind is tuple or isinstance(value, list | tuple | set | frozenset):
        return [_walk(item, counts, depth + 1) for item in value]
    if isinstance(value, int | float):  # bool/int/float subclasses, e.g. IntEnum
        return value
    return redact_text(_text_of(value), counts)


@lru_cache(maxsize=8192)
def _key(key: str) -> tuple[str, bool, Counts]:
    """A key redacted, whether it names a secret, and the redactions made. Cached: the same
    keys come back on every record (`tokens_in` alone would otherwise take the slow path each
    time). Judged on the redacted key, so that a second pass judges the same key."""
    found: Counts = Counter()
    redacted = redact_text(key, found)
    return redacted, is_secret_name(redacted), found


def _conceal(value: Any, counts: Counts | None) -> Any:
    """The value of a secret-named key: replaced, unless there is nothing to hide (None, a
    boolean, an empty string or container) or it is already a marker."""
    if value is None or value is True or value is False:
        return value
    if type(value) is str and (not value or is_marker(value)):
        return value
    if type(value) in (dict, list, tuple) and not value:
        return value
    if type(value) is str:
        recognised = _recognised(value, counts, False)
        if recognised is not None:
            return recognised
    if counts is not None:
        counts[FIELD] += 1
    return MARKER.format(FIELD)


def _recognised(value: str, counts: Counts | None, keep_scheme: bool) -> str | None:
    """`value` redacted by the text rules when they conceal all of it (one marker, or with
    `keep_scheme` an auth scheme and one marker), else None. A secret-named field or header
    then gets the marker of the rule that knows the secret's format (`[REDACTED:openai]`), as
    the same key gets in free text; only what no rule recognises is `field` or `header`."""
    found: Counts = Counter()
    redacted = redact_text(value, found)
    if not found:
        return None
    if not is_marker(redacted):
        scheme = _SCHEME.fullmatch(redacted) if keep_scheme else None
        if scheme is None or not is_marker(scheme.group(2)):
            return None
    if counts is not None:
        counts.update(found)
    return redacted


def _text_of(value: Any) -> str:
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        try:
            return str(isoformat())
        except Exception:
            pass
    try:
        return str(value)
    except Exception:  # a broken __str__ must not break logging
        return f"<unprintable {type(value).__name__}>"


def _json_text(value: Any) -> str | None:
    return orjson.dumps(value).decode() if value else None


def redact_json_text(value: Any, counts: Counter[str]) -> str | None:
    """`redact_json(value)` as JSON text (None for an empty value), with a fast path for the
    usual value that holds nothing to redact: serialize once and look for the rules' triggers
    in the whole text.

    Sound because every rule (and every secret name, see `redact.names.NAME_TRIGGERS`) needs
    one of the triggers (`redact.triggers.rules_for`) in the lower-cased string it acts on, and
    a trigger in any key or string of the value is also in the lower-cased JSON text: orjson
    writes strings as UTF-8 and escapes only `"`, `\\` and control characters, none of which a
    trigger contains. Percent-encoded names (`is_secret_name` unquotes) and anything orjson
    cannot serialize take the full walk."""
    if not value:
        return None
    try:
        data = orjson.dumps(value)
    except TypeError:
        return _json_text(redact_json(value, counts))
    if b"%" in data or needs_redaction_utf8(data):
        return _json_text(redact_json(value, counts))
    return data.decode()
