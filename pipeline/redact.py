"""Secret redaction: pure rules, no I/O. Used by the structured logger on every record, and by
the pipeline before storage.

A rule is a plain callable `rule(text, counts) -> text` with a `name`: it replaces each secret it
finds with `[REDACTED:<name>]` and keeps the context around it (`Bearer [REDACTED:bearer]`,
`https://user:[REDACTED:userinfo]@host`, `?token=[REDACTED:query]&page=2`), adding one to
`counts[name]` per replacement. The entry points take an optional `collections.Counter` for those
counts:

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
any text it can match contains; `redact_text` lower-cases the text once and runs only the rules
whose triggers occur, so a line with no candidate costs one `lower()` and a few dozen substring
tests (about 1 µs for an 80-character line).
Patterns are written to stay linear on hostile input (possessive quantifiers, lookbehinds that
anchor names at word starts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

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


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret. `pattern` has a group named `secret` (or `secret2`, `secret3` for
    alternatives): that span is replaced, the rest of the match is kept. `accept`, when given,
    vets a match (e.g. is the parameter name a secret one); a rejected match resumes scanning
    after its `name` group, so `a=password=x` still finds `password=x`."""

    name: str
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]
    accept: Callable[[re.Match[str]], bool] | None = None

    def __call__(self, text: str, counts: Counts | None = None) -> str:
        search = self.pattern.search
        match = search(text)
        if match is None:
            return text
        marker = MARKER.format(self.name)
        parts: list[str] = []
        done = 0  # text[:done] is in parts
        replaced = 0
        while match is not None:
            group = _secret_group(match)
            secret = match.group(group)
            if (
                not secret
                or _IS_MARKER(secret)
                or (self.accept is not None and not self.accept(match))
            ):
                resume = match.end("name") if "name" in match.re.groupindex else -1
                match = search(text, max(resume, match.start() + 1))
                continue
            start, end = match.span(group)
            parts.append(text[done:start])
            parts.append(marker)
            done = end
            replaced += 1
            match = search(text, max(match.end(), match.start() + 1))
        if not replaced:
            return text
        parts.append(text[done:])
        if counts is not None:
            counts[self.name] += replaced
        return "".join(parts)


def _secret_group(match: re.Match[str]) -> str:
    if match.group("secret") is not None:
        return "secret"
    groups = match.re.groupindex
    if "secret2" in groups and match.group("secret2") is not None:
        return "secret2"
    return "secret3"


def _named_secret(match: re.Match[str]) -> bool:
    return is_secret_name(match.group("name"))


_LITERALS = frozenset(("null", "none", "true", "false", "undefined"))


def _assignment(match: re.Match[str]) -> bool:
    """A `name = value` whose name is secret and whose value is not a JSON literal."""
    value = match.group(_secret_group(match))
    return value.lower() not in _LITERALS and is_secret_name(match.group("name"))


_TOKEN = r"A-Za-z0-9_\-"
_B64 = r"A-Za-z0-9\-._~+/"

GITHUB = Rule(
    "github",
    re.compile(
        r"(?<![A-Za-z0-9])(?P<secret>gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
    ),
    ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
)
ANTHROPIC = Rule(
    "anthropic",
    re.compile(rf"(?<![A-Za-z0-9])(?P<secret>sk-ant-[{_TOKEN}]{{20,}})"),
    ("sk-ant-",),
)
# A digit is required so that slugs like `sk-long-hyphenated-page-name` stay.
OPENAI = Rule(
    "openai",
    re.compile(
        rf"(?<![A-Za-z0-9_\-])(?P<secret>sk-(?:proj-|svcacct-|admin-)?"
        rf"(?=[{_TOKEN}]*[0-9])[A-Za-z0-9][{_TOKEN}]{{19,}})"
    ),
    ("sk-",),
)
AWS = Rule(
    "aws",
    re.compile(r"(?<![A-Za-z0-9])(?P<secret>(?:AKIA|ASIA)[A-Z0-9]{16})(?![A-Za-z0-9])"),
    ("akia", "asia"),
)
JWT = Rule(
    "jwt",
    re.compile(rf"(?<![{_TOKEN}])(?P<secret>eyJ[{_TOKEN}]+\.[{_TOKEN}]+\.[{_TOKEN}]*)"),
    ("eyj",),
)
# An opaque token: 8+ characters with a digit or punctuation, or 20+ letters. Prose such as
# "bearer tokens" or "Bearer authentication" is left alone. In the pattern, not in `accept`, so
# that `bearer bearer <token>` still finds the token.
BEARER = Rule(
    "bearer",
    re.compile(
        rf"(?i:\bbearer)\s+(?P<secret>(?=[{_B64}]*[0-9\-._~+/])[{_B64}]{{8,}}=*|[A-Za-z]{{20,}}=*)"
    ),
    ("bearer",),
)
# `scheme://user:password@host`; the password runs to the last `@` of the authority, since
# passwords with a raw `@` do get logged. A user name never holds `[` or `]` (RFC 3986), which
# also keeps the rule from reading a marker's `:` as the start of a password.
USERINFO = Rule(
    "userinfo",
    re.compile(
        r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*+://[^:/?#@\s\"'<>\[\]]*+:"
        rf"(?P<secret>{_MARKER}|[^/?#\s\"'<>]+)@"
    ),
    ("://",),
)
# `?token=...`, `&client_secret=...`, `#access_token=...` (OAuth implicit flow fragments).
QUERY = Rule(
    "query",
    re.compile(
        r"[?&#](?P<name>[^=&#?\s\"'<>\[\]]++)="
        rf"(?P<secret>{_MARKER}|[^&#\s\"'<>]++)"
    ),
    _NAME_TRIGGERS,
    _named_secret,
)
# `password=x`, `password: x`, `"api_key": "x"`, `'token' => 'x'`-ish, `Authorization: Basic x`
# (the scheme is kept). Names start at a word start, so the scan stays linear. An unterminated
# quoted value (a cut log line) is still redacted, to its end.
KV = Rule(
    "kv",
    re.compile(
        r"(?<![A-Za-z0-9_.\-])(?P<q>[\"']?)(?P<name>[A-Za-z0-9_.\-]++)(?P=q)\s*[:=]>?\s*"
        r"(?:(?:Bearer|Basic|Token|Digest|Bot)\s+)?"
        r"(?:\"(?P<secret>(?:\\.|[^\"\\])*+)\""
        r"|'(?P<secret2>(?:\\.|[^'\\])*+)'"
        rf"|[\"']?(?P<secret3>{_MARKER}|[^\s,;&\"'}}\]]+))"
    ),
    _NAME_TRIGGERS,
    _assignment,
)

RULES: tuple[Rule, ...] = (GITHUB, ANTHROPIC, OPENAI, AWS, JWT, BEARER, USERINFO, QUERY, KV)
"""Applied in this order: the specific token shapes first, so a GitHub token in `?token=` is
counted as `github`; the structural rules then skip values that are already markers."""
FIELD = "field"
"""Counter name for values replaced because their key names a secret (`redact_json`)."""
HEADER = "header"
"""Counter name for values of secret headers (`redact_headers`)."""
NAMES = (*(rule.name for rule in RULES), HEADER, FIELD)

_ALL_TRIGGERS = tuple(sorted({trigger for rule in RULES for trigger in rule.triggers}))
# A loop of `in` tests with an early exit measured as fast as one combined regex over the
# same substrings, and simpler to keep in step with the rules.


# --- entry points -----------------------------------------------------------------------------


def has_trigger(lowered: str) -> bool:
    """Whether lower-cased text contains a trigger of some rule: without one, no rule can
    match and no name is a secret name, so redaction changes nothing."""
    for trigger in _ALL_TRIGGERS:  # noqa: SIM110 (a loop is faster than any() on a genexpr)
        if trigger in lowered:
            return True
    return False


def redact_text(text: str, counts: Counts | None = None) -> str:
    """`text` with every secret replaced by its rule's marker."""
    lowered = text.lower()
    for trigger in _ALL_TRIGGERS:
        if trigger in lowered:
            break
    else:
        return text  # the fast path: most log lines
    if len(text) > _CACHED_LENGTH:
        return _apply_rules(text, lowered, counts)
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
    return _apply_rules(text, text.lower(), found), found


def _apply_rules(text: str, lowered: str, counts: Counts | None) -> str:
    for rule in RULES:
        for trigger in rule.triggers:
            if trigger in lowered:
                text = rule(text, counts)
                break
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
