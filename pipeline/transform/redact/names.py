"""Secret names: whether a header, JSON key, query parameter or `name=value` name holds a
secret (`is_secret_name`), and the trigger words every such name contains (`NAME_TRIGGERS`).

Names are judged by words, not substrings: `api_key`, `apiKey`, `client_secret`,
`X-Amz-Signature` name secrets; `keyboard`, `author`, `tokens_in` and
`x-ratelimit-remaining-tokens` do not. A room of its own because two sides ask it: the rules
whose `check` judges a name (`rules`), and the engine, for JSON keys and headers (`engine`);
it needs neither of them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

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
# `password_length`, `key_file`, `token_expires_at`, and exception names (`KeyError: 'u1'`
# names the missing key, which a traceback is read for). (`id` is not one: `token_id` may be
# the token; `session_id` is caught below anyway.)
_QUALIFIERS = frozenset(
    (
        "error",
        "errors",
        "exception",
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
# Lower-case substrings at least one of which every secret name contains (the name triggers):
# a rule with a check on names gets them all (`rules`).
NAME_TRIGGERS = (
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
