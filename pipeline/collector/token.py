"""Which requests carry one of the collector's secrets.

A Tail Worker sends `Authorization: Bearer <token>`; a Logpush job cannot compute headers but
sets fixed ones from `header_<name>=` parameters of its destination URL, hence the second,
configurable header. Candidates and tokens are compared as SHA-256 digests with
`hmac.compare_digest`, against every token without stopping at a match, so neither the time
taken nor its variation with length tells an attacker which token came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from pipeline.errors import SettingsError


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class Tokens:
    def __init__(self, tokens: Iterable[str], header: str) -> None:
        self._digests = [_digest(token) for token in tokens if token]
        if not self._digests:
            # An open collector lets anyone write into the pipeline: refuse rather than warn.
            raise SettingsError(
                "TAILPIPE_COLLECT_TOKENS", "at least one token for the collector", ""
            )
        self.header = header.lower()

    def allows(self, headers: Mapping[str, str]) -> bool:
        """True when the bearer token or the secret header matches one of the tokens."""
        candidates = [_bearer(headers.get("authorization", "")), headers.get(self.header, "")]
        matched = False
        for candidate in candidates:
            if not candidate:
                continue
            digest = _digest(candidate)
            for known in self._digests:
                matched |= hmac.compare_digest(digest, known)
        return matched


def _bearer(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
