"""Error fingerprints: one identity for every occurrence of "the same" error.

Two exceptions are the same error when their names match and their messages match once the
parts that vary per occurrence are normalised away: URLs, e-mail addresses, UUIDs, hex ids
and numbers. `Cannot read properties of undefined (reading 'id3')` at 10:01 and
`... (reading 'id7')` at 10:02 share a fingerprint; a TypeError and a RangeError never do.
"""

from __future__ import annotations

import hashlib
import re

_MAX_TEMPLATE = 300

# A URL ends at a space, a quote, `<`, `>`, `)` or a `]` it did not open: a bracketed part
# inside it (a redaction marker, `user:[REDACTED:userinfo]@host`, `?token=[REDACTED:query]`;
# an IPv6 host, `http://[::1]:8080`) is part of it. Without that, the template kept what
# followed the marker (`<url>]@db.internal/app`): the host and path, which vary per occurrence.
_URL = r"""\b[a-z][a-z0-9+.-]*://(?:\[[^\s'"<>()\[\]]*\]|[^\s'"<>)\]])+"""

# Order matters: a URL can contain a UUID, hex and numbers, so URLs go first.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_URL, re.IGNORECASE), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b(?:0x)?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def template(message: str) -> str:
    """The message with its varying parts replaced by placeholders."""
    text = message[: _MAX_TEMPLATE * 4]
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return text.strip()[:_MAX_TEMPLATE]


def fingerprint(name: str, message: str) -> str:
    """16 hex characters identifying the error `name: message` up to its varying parts."""
    key = f"{name.strip()}\x00{template(message)}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()
