"""Secret redaction: pure rules, no I/O. Used by the structured logger on every record, and by
the pipeline before storage (rows, rollups, dead letters).

The rules are data: `rules.toml`, shipped in this package, holds one entry per kind of
credential (its documented shape, the trigger words that gate it, a regex and test examples),
read and checked once, when this module is imported; a malformed entry is a `SettingsError`
naming the rule. A rule is a plain callable `rule(text, counts) -> text` with a `name`: it
replaces each secret it finds with `[REDACTED:<name>]` and keeps the context around it
(`Bearer [REDACTED:bearer]`, `https://user:[REDACTED:userinfo]@host`,
`?token=[REDACTED:query]&page=2`), adding one to `counts[name]` per replacement. The names are
the `rule` label of `tailpipe_redactions_total`, a set fixed by the file. The entry points take
an optional `collections.Counter` for those counts:

- `redact_text(text)`: free text (log messages, exception messages and stacks);
- `redact_url(url)`: a URL (userinfo passwords, secret query or fragment parameters, tokens);
- `redact_headers(headers)`: a header mapping; secret headers lose their value;
- `redact_json(value)`: any JSON-like value; a key that names a secret (`is_secret_name`) has
  its value replaced whatever it is, and every string (keys included) is text-redacted.

Redaction is idempotent: markers are never matched again, so stored text can be re-redacted
when a rule is added. Names are judged by words, not substrings (`is_secret_name`): `api_key`,
`apiKey`, `client_secret`, `X-Amz-Signature` name secrets; `keyboard`, `author`, `tokens_in`
and `x-ratelimit-remaining-tokens` do not.

Speed: this runs on every log line. Each rule lists lower-case trigger substrings, one of which
any text it can change contains. All triggers of all rules are compiled into one regex that
`redact_text` searches once in the lower-cased text: a line with no trigger costs one `lower()`
and that one scan, however many rules there are. The scan does not stop at every character:
each trigger is looked for at one of its characters, picked so that those characters are few
and rare in logs (`token` at its `k`, `npm_` at its `_`; `_anchors`). A text with a trigger is
scanned once more to learn which triggers it holds, and only their rules run, in file order.
Patterns are written to stay linear on hostile input (possessive quantifiers, lookbehinds that
anchor tokens and names at word starts, bounded retries).
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import unquote

from pipeline.errors import SettingsError

MARKER = "[REDACTED:{}]"
_MARKER = r"\[REDACTED(?::[a-z_]+)?\]"
_IS_MARKER = re.compile(_MARKER).fullmatch

# --- secret names (headers, JSON keys, query parameters, key=value pairs) ---------------------

# Whole words (after splitting on separators and camelCase) that make a name secret.
_SECRET_WORDS = frozenset(
    (
        "token",
        "key",
        "apikey",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pass",
        "pwd",
        "passphrase",
        "auth",
        "authorization",
        "cookie",
        "sig",
        "signature",
        "credential",
        "credentials",
        "creds",
        "jwt",
        "bearer",
        "otp",
        "csrf",
        "xsrf",
    )
)
# Substrings of the separator-free name: compounds written as one word (`authtoken`,
# `PRIVATEKEY`). `token` alone is not here: `tokens_in` and `max_tokens` are counts.
_SECRET_PARTS = (
    "password",
    "passwd",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "signingkey",
    "credential",
    "signature",
    "cookie",
    "authorization",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "sessiontoken",
    "securitytoken",
    "csrftoken",
    "xsrftoken",
)
# A last word that says the name is about a secret, not the secret itself: `token_type`,
# `password_length`, `key_file`, `token_expires_at`. (`id` is not one: `token_id` may be the
# token; `session_id` is caught below anyway.)
_QUALIFIERS = frozenset(
    (
        "type",
        "types",
        "kind",
        "count",
        "counts",
        "usage",
        "limit",
        "limits",
        "remaining",
        "used",
        "total",
        "length",
        "len",
        "size",
        "expiry",
        "expires",
        "expiration",
        "at",
        "ttl",
        "url",
        "uri",
        "endpoint",
        "name",
        "names",
        "file",
        "path",
        "hint",
        "format",
        "version",
        "set",
        "present",
        "enabled",
        "required",
        "provided",
        "source",
    )
)
# Session identifiers are bearer credentials, but `session_count` is not one.
_SESSION_NAMES = frozenset(("session", "sessionid", "sessid", "phpsessid", "jsessionid"))
# Header names the brief lists explicitly; all are also caught by the word rules above.
SECRET_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-hub-signature",
        "x-hub-signature-256",
    )
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# Lower-case substrings at least one of which every secret name contains (the name triggers).
_NAME_TRIGGERS = (
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "auth",
    "cookie",
    "sig",
    "cred",
    "jwt",
    "bearer",
    "otp",
    "csrf",
    "xsrf",
    "sess",
)


@lru_cache(maxsize=8192)
def is_secret_name(name: str) -> bool:
    """Whether a header, key or parameter called `name` holds a secret. Cached: the same few
    names (context keys, header names) come back on every record."""
    if name.lower() in SECRET_HEADERS:
        return True
    if "%" in name:
        name = unquote(name)
    words = [word.lower() for word in _WORD.findall(name)]
    compact = "".join(words)
    if compact in _SESSION_NAMES:
        return True
    named = [word for word in words if not word.isdigit()]  # `x-hub-signature-256`
    if len(named) > 1 and named[-1] in _QUALIFIERS:
        return False
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(part in compact for part in _SECRET_PARTS)


# --- rules ------------------------------------------------------------------------------------

Counts = Counter[str]
Check = Callable[[re.Match[str], str], bool]
"""Vets one match, given the secret it would replace: False keeps the text as it is."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret. `pattern` has a group named `secret` (or `secret2`, `secret3`, ... for
    alternatives): that span is replaced, the rest of the match is kept. `accept`, when given,
    vets a match (e.g. is the parameter name a secret one); a rejected match resumes scanning
    after its `name` group, so `a=password=x` still finds `password=x`. The other fields
    describe the rule (docs/events.md and the tests read them)."""

    name: str
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]
    accept: Check | None = None
    title: str = ""
    category: str = ""
    kinds: tuple[str, ...] = ()
    shape: str = ""
    source: str = ""
    examples: tuple[tuple[str, str], ...] = ()
    """`(text, secret)` pairs: `secret` must be gone from the redacted `text`."""
    groups: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The secret groups of `pattern`, in order."""

    def __post_init__(self) -> None:
        groups = sorted((i, g) for g, i in self.pattern.groupindex.items() if _SECRET_GROUP(g))
        object.__setattr__(self, "groups", tuple(g for _, g in groups))

    def __call__(self, text: str, counts: Counts | None = None) -> str:
        search = self.pattern.search
        match = search(text)
        if match is None:
            return text
        groups = self.groups
        marker = MARKER.format(self.name)
        parts: list[str] = []
        done = 0  # text[:done] is in parts
        replaced = 0
        while match is not None:
            for group in groups:
                secret = match.group(group)
                if secret is not None:
                    break
            if (
                not secret
                or _IS_MARKER(secret)
                or (self.accept is not None and not self.accept(match, secret))
            ):
                resume = match.end("name") if "name" in match.re.groupindex else -1
                match = search(text, max(resume, match.start() + 1))
                continue
            start, end = match.span(group)
            parts.append(text[done:start])
            parts.append(marker)
            done = end
            replaced += 1
            # On from the secret's end, not the match's: what closed this match (a quote, an
            # `@`) may open the next one, as it would on a second pass over the markers.
            match = search(text, max(end, match.start() + 1))
        if not replaced:
            return text
        parts.append(text[done:])
        if counts is not None:
            counts[self.name] += replaced
        return "".join(parts)


_SECRET_GROUP = re.compile(r"secret[0-9]*").fullmatch
_LITERALS = frozenset(("null", "none", "true", "false", "undefined"))


def _named_secret(match: re.Match[str], secret: str) -> bool:
    return is_secret_name(match.group("name"))


def _assignment(match: re.Match[str], secret: str) -> bool:
    """A `name = value` whose name is secret and whose value is not a JSON literal."""
    return secret.lower() not in _LITERALS and is_secret_name(match.group("name"))


def _basic_credentials(match: re.Match[str], secret: str) -> bool:
    """Base64 of `user:password` (RFC 7617): printable UTF-8 with a colon. Prose after the word
    Basic (`Basic authentication`) decodes to bytes that are not."""
    data = secret.rstrip("=")
    try:
        decoded = base64.b64decode(data + "=" * (-len(data) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


CHECKS: dict[str, Check] = {
    "secret_name": _named_secret,
    "assignment": _assignment,
    "basic_credentials": _basic_credentials,
}
"""The `check` values of the rules file."""
_NAME_CHECKS = frozenset(("secret_name", "assignment"))
CATEGORIES = (
    "source", "cloud", "payment", "chat", "email", "registry", "llm", "monitoring", "devtools",
    "keys", "url", "authorization", "context",
)  # fmt: skip
FIELD = "field"
"""Counter name for values replaced because their key names a secret (`redact_json`)."""
HEADER = "header"
"""Counter name for values of secret headers (`redact_headers`)."""
RULES_FILE = "rules.toml"
_RULE_KEYS = (
    "name", "title", "category", "kinds", "shape", "source", "triggers", "pattern", "check",
    "examples",
)  # fmt: skip
_RULE_NAME = re.compile(r"[a-z][a-z_]*").fullmatch
_TRIGGER = re.compile(r"[ !#-\[\]-~]+").fullmatch
"""Printable ASCII without a double quote or a backslash: JSON text holds a trigger as it is
(the transform's fast path searches serialized JSON)."""


def parse_rules(label: str, document: dict[str, Any]) -> tuple[Rule, ...]:
    """The rules of a rules document (`label` names it in errors), checked: any problem is a
    `SettingsError` naming the rule and the key."""
    for key in document:
        if key != "rule":
            raise SettingsError(f"{label}: {key}", "only [[rule]] tables", key)
    tables = document.get("rule")
    if type(tables) is not list or not tables or not all(type(t) is dict for t in tables):
        raise SettingsError(f"{label}: rule", "an array of tables ([[rule]])", tables)
    rules: list[Rule] = []
    names: set[str] = {HEADER, FIELD}
    for position, table in enumerate(tables, 1):
        name = table.get("name")
        where = f"{label}: rule {name!r}" if type(name) is str else f"{label}: rule #{position}"
        if type(name) is not str or not _RULE_NAME(name):
            raise SettingsError(f"{where}: name", "a name of [a-z_] (the marker's)", name)
        if name in names:
            raise SettingsError(f"{where}: name", "a name no other rule has", name)
        names.add(name)
        rules.append(_rule(where, table))
    return tuple(rules)


def _rule(where: str, table: dict[str, Any]) -> Rule:
    def fail(key: str, expected: str, got: object) -> SettingsError:
        return SettingsError(f"{where}: {key}", expected, got)

    for key in table:
        if key not in _RULE_KEYS:
            raise fail(key, f"one of the keys {', '.join(_RULE_KEYS)}", key)
    for key in ("title", "shape"):
        if type(table.get(key)) is not str or not table[key]:
            raise fail(key, "a non-empty string", table.get(key))
    if table.get("category") not in CATEGORIES:
        raise fail("category", f"one of {', '.join(CATEGORIES)}", table.get("category"))
    source = table.get("source")
    if type(source) is not str or not source.startswith("https://"):
        raise fail("source", "the https:// URL documenting the format", source)
    kinds = table.get("kinds")
    if type(kinds) is not list or not kinds or not all(type(k) is str and k for k in kinds):
        raise fail("kinds", "a non-empty list of non-empty strings", kinds)
    check = table.get("check")
    if check is not None and check not in CHECKS:
        raise fail("check", f"one of {', '.join(CHECKS)}", check)
    triggers = table.get("triggers")
    if type(triggers) is not list or not all(
        type(t) is str and _TRIGGER(t) and t == t.lower() for t in triggers
    ):
        what = 'a list of lower-case substrings (printable ASCII, no " or \\)'
        raise fail("triggers", what, triggers)
    if check in _NAME_CHECKS:
        triggers = [*triggers, *_NAME_TRIGGERS]
    if not triggers:
        raise fail("triggers", "at least one trigger (or a check on names)", triggers)
    raw = table.get("pattern")
    if type(raw) is not str or not raw:
        raise fail("pattern", "a non-empty regular expression", raw)
    try:
        pattern = re.compile(raw)
    except re.error as error:
        raise fail("pattern", f"a Python regular expression ({error})", raw) from None
    if not any(_SECRET_GROUP(group) for group in pattern.groupindex):
        raise fail("pattern", "a group named secret (or secret2, ...)", raw)
    if check in _NAME_CHECKS and "name" not in pattern.groupindex:
        raise fail("pattern", f"a group named name, which check {check!r} judges", raw)
    examples = table.get("examples")
    if type(examples) is not list or not examples:
        raise fail("examples", "a non-empty list of examples", examples)
    pairs: list[tuple[str, str]] = []
    for example in examples:
        if type(example) is dict and set(example) == {"text", "secret"}:
            text, secret = example["text"], example["secret"]
        else:
            text = secret = example
        if not (type(text) is str and type(secret) is str and secret and secret in text):
            raise fail("examples", "strings, or tables {text, secret} with secret in text", example)
        lowered = text.lower()
        if not any(trigger in lowered for trigger in triggers):
            raise fail("examples", "texts holding one of the triggers", text)
        pairs.append((text, secret))
    return Rule(
        name=table["name"],
        pattern=pattern,
        triggers=tuple(dict.fromkeys(triggers)),
        accept=CHECKS[check] if check is not None else None,
        title=table["title"],
        category=table["category"],
        kinds=tuple(kinds),
        shape=table["shape"],
        source=source,
        examples=tuple(pairs),
    )


def load_rules() -> tuple[Rule, ...]:
    """The rules of the packaged `rules.toml`, in file order."""
    label = f"pipeline/transform/redact/{RULES_FILE}"
    raw = (
        resources.files("pipeline.transform.redact")
        .joinpath(RULES_FILE)
        .read_text(encoding="utf-8")
    )
    try:
        document = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(label, "valid TOML", str(error)) from None
    return parse_rules(label, document)


RULES: tuple[Rule, ...] = load_rules()
"""Applied in this order: the specific token shapes first, so a GitHub token in `?token=` is
counted as `github`; the structural rules then skip values that are already markers."""
BY_NAME: dict[str, Rule] = {rule.name: rule for rule in RULES}
NAMES = (*(rule.name for rule in RULES), HEADER, FIELD)


# --- the trigger scan -----------------------------------------------------------------------

_FREQUENCY = {
    **dict.fromkeys("0123456789", 12), " ": 93, '"': 62, ":": 23, "/": 11, "-": 9, ".": 8,
    "_": 6, "=": 3, "e": 82, "t": 57, "s": 51, "a": 48, "o": 43, "i": 40, "r": 37, "n": 37,
    "l": 30, "c": 29, "d": 26, "p": 25, "m": 23, "u": 20, "h": 16, "f": 12, "g": 11, "b": 8,
    "y": 7, "v": 7, "x": 7, "w": 6, "k": 6, "j": 3, "q": 3, "z": 2,
}  # fmt: skip
"""Characters per thousand in lower-cased log text (messages, URLs, JSON; measured on the
synthetic stream and the docs); others count as 0.5."""


def _frequency(c: str) -> float:
    return _FREQUENCY.get(c, 0.5)


def _anchors(triggers: tuple[str, ...]) -> dict[str, int]:
    """Where the scan looks for each trigger: the index of one of its characters, chosen so
    that the characters the scan stops at are few and rare. Every trigger must hold one of
    them (a hitting set): greedily the character that covers most triggers per frequency,
    then any that became redundant are dropped, most frequent first. Each trigger is then
    looked for at its rarest character in the set."""
    chosen: set[str] = set()
    left = set(triggers)
    while left:
        chars = sorted({c for t in left for c in t})
        best = max(chars, key=lambda c: (sum(c in t for t in left) / _frequency(c), -_frequency(c)))
        chosen.add(best)
        left = {t for t in left if best not in t}
    for c in sorted(chosen, key=_frequency, reverse=True):
        if all(any(d in t for d in chosen - {c}) for t in triggers):
            chosen.discard(c)
    return {
        t: min((i for i, c in enumerate(t) if c in chosen), key=lambda i: (_frequency(t[i]), i))
        for t in triggers
    }


def _scan_source(anchor: dict[str, int], report: bool) -> tuple[str, list[str]]:
    """One regex finding every trigger, and (with `report`) the trigger each capture group
    names, in the order the regex tries them.

    For each character that anchors some trigger: `c(?=...)`, a lookahead over a trie of what
    follows `c` in those triggers, each ending in a lookbehind for the whole trigger (when `c`
    is not its first character) and, with `report`, an empty group naming it. A match
    consumes only the anchor, so every anchor position is tried; the most common anchors come
    first, since at each candidate the branches are tried in order."""
    by_char: dict[str, dict[str, Any]] = {}
    for trigger, at in sorted(anchor.items()):
        node = by_char.setdefault(trigger[at], {})
        for c in trigger[at + 1 :]:
            node = node.setdefault(c, {})
        node.setdefault("", []).append(trigger)
    order: list[str] = []

    def trie(node: dict[str, Any]) -> str:
        alternatives = [re.escape(c) + trie(child) for c, child in sorted(node.items()) if c]
        # Deeper first (above), then the longer lookbehinds: the most specific trigger wins.
        for trigger in sorted(node.get("", ()), key=len, reverse=True):
            behind = "" if anchor[trigger] == 0 else f"(?<={re.escape(trigger)})"
            alternatives.append(behind + ("()" if report else ""))
            order.append(trigger)
        if len(alternatives) == 1:
            return alternatives[0]
        return f"(?:{'|'.join(alternatives)})"

    chars = sorted(by_char, key=lambda c: (-_frequency(c), c))
    return "|".join(f"{re.escape(c)}(?={trie(by_char[c])})" for c in chars), order


def _overlap(a: str, at: int, b: str, bt: int) -> tuple[bool, bool]:
    """`a` and `b` placed at one position by their anchors `at` and `bt`: whether they agree
    where they overlap (both can be found there), and whether `b` then lies within `a`
    (finding `a` finds `b`)."""
    if a[at] != b[bt]:
        return False, False
    shift = at - bt  # b[i] lies under a[i + shift]
    agree = all(a[i + shift] == b[i] for i in range(len(b)) if 0 <= i + shift < len(a))
    return agree, agree and shift >= 0 and shift + len(b) <= len(a)


def _build_scan() -> tuple[re.Pattern[str], re.Pattern[str], tuple[_Found, ...]]:
    """The search for any trigger, the scan reporting them, and per reporting group: the rules
    it selects and the other triggers to look for at its position."""
    triggers = tuple(sorted({t for rule in RULES for t in rule.triggers}))
    masks: dict[str, int] = {}
    for index, rule in enumerate(RULES):
        for trigger in rule.triggers:
            masks[trigger] = masks.get(trigger, 0) | 1 << index
    anchor = _anchors(triggers)
    search, _ = _scan_source(anchor, report=False)
    scan, order = _scan_source(anchor, report=True)
    # A match reports the first trigger the regex finds at an anchor position. Another one
    # found there too either lies within it (its rules are selected with it), or is tried
    # later, so it is checked; one tried earlier would have been reported instead.
    found: list[_Found] = [(0, ())]
    for at, a in enumerate(order):
        mask = masks[a]
        check: list[tuple[str, int, int]] = []
        for later, b in enumerate(order):
            if a[anchor[a]] != b[anchor[b]]:
                continue  # found at different characters
            agree, within = _overlap(a, anchor[a], b, anchor[b])
            if within:
                mask |= masks[b]
            elif agree and later > at:
                check.append((b, anchor[b], masks[b]))
        found.append((mask, tuple(check)))
    return re.compile(search), re.compile(scan), tuple(found)


_Found = tuple[int, tuple[tuple[str, int, int], ...]]
_SEARCH_RE, _SCAN_RE, _FOUND = _build_scan()
_SEARCH = _SEARCH_RE.search
_FINDITER = _SCAN_RE.finditer


def _selected(lowered: str, start: int) -> int:
    """The rules (a bit mask, by index) whose triggers occur in `lowered` from `start` on."""
    found = _FOUND
    mask = 0
    for match in _FINDITER(lowered, start):
        selects, check = found[match.lastindex or 0]
        mask |= selects
        if check:
            at = match.start()
            for trigger, behind, selects in check:
                if selects & ~mask and at >= behind and lowered.startswith(trigger, at - behind):
                    mask |= selects
    return mask


@lru_cache(maxsize=4096)
def _plan(mask: int) -> tuple[Rule, ...]:
    """The rules a set of found triggers selects, in file order."""
    return tuple(rule for index, rule in enumerate(RULES) if mask >> index & 1)


# --- entry points -----------------------------------------------------------------------------


def has_trigger(lowered: str) -> bool:
    """Whether lower-cased text contains a trigger of some rule: without one, no rule can
    match and no name is a secret name, so redaction changes nothing."""
    return _SEARCH(lowered) is not None


def redact_text(text: str, counts: Counts | None = None) -> str:
    """`text` with every secret replaced by its rule's marker."""
    lowered = text.lower()
    first = _SEARCH(lowered)
    if first is None:
        return text  # the fast path: most log lines
    if len(text) > _CACHED_LENGTH:
        return _apply_rules(text, lowered, first.start(), counts)
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
    return _apply_rules(text, text.lower(), 0, found), found


def _apply_rules(text: str, lowered: str, start: int, counts: Counts | None) -> str:
    """The rules whose triggers occur in `lowered` (from `start` on), applied in order. Which
    rules run is decided on the original text: a marker never adds one."""
    for rule in _plan(_selected(lowered, start)):
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
    if not value or _IS_MARKER(value):
        return value
    marker = MARKER.format(HEADER)
    scheme = _SCHEME.fullmatch(value) if keep_scheme else None
    if scheme is not None:
        if _IS_MARKER(scheme.group(2)):
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
    if type(value) is str and (not value or _IS_MARKER(value)):
        return value
    if type(value) in (dict, list, tuple) and not value:
        return value
    if counts is not None:
        counts[FIELD] += 1
    return MARKER.format(FIELD)


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
