"""Bearer tokens and shared secrets, checked the same way by every HTTP process.

`tailpipe api` (pipeline/api/auth.py) and `tailpipe collect` (pipeline/collector/auth.py) both
hold their tokens here. Only SHA-256 digests are kept, and a presented secret is hashed and
compared with `hmac.compare_digest` against every token, without stopping at a match: the
digests all have the same length, so neither the time taken nor its variation with the
presented secret's length tells an attacker which token came close, how long one is, or how
many there are before the one that matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

DIGEST_BYTES = hashlib.sha256().digest_size


def digest(secret: str) -> bytes:
    """SHA-256 of the secret's UTF-8; never raises (a header's odd bytes stay bytes)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value; "" for any other scheme."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Tokens:
    """Secrets, each granting a level (a positive int: the caller's own enum)."""

    def __init__(self, grants: Iterable[tuple[str, int]]) -> None:
        self._digests = [(digest(token), int(level)) for token, level in grants if token]
        if any(level <= 0 for _, level in self._digests):
            raise ValueError("a token's level must be positive")

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def level(self, presented: str) -> int:
        """The highest level of the tokens equal to `presented`; 0 when none is.

        Every token is compared, whatever matched first; an empty `presented` is compared too.
        """
        given = digest(presented)
        granted = 0
        for known, level in self._digests:
            # No branch on the outcome: the same work whether it matched or not.
            granted = max(granted, level * hmac.compare_digest(given, known))
        return granted
