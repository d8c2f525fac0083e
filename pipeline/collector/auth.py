"""Which requests carry one of the collector's secrets.

A Tail Worker sends `Authorization: Bearer <token>`; a Logpush job cannot compute headers but
sets fixed ones from `header_<name>=` parameters of its destination URL, hence the second,
configurable header. Both candidates are checked by pipeline/web/tokens.py, as the API's tokens
are: SHA-256 digests compared with `hmac.compare_digest` against every token without stopping
at a match, so neither the time taken nor its variation with length tells an attacker which
token came close.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipeline.errors import SettingsError
from pipeline.web import tokens as shared


class Tokens:
    def __init__(self, tokens: Iterable[str], header: str) -> None:
        self._tokens = shared.Tokens((token, 1) for token in tokens)
        if not self._tokens:
            # An open collector lets anyone write into the pipeline: refuse rather than warn.
            raise SettingsError(
                "TAILPIPE_COLLECT_TOKENS", "at least one token for the collector", ""
            )
        self.header = header.lower()

    def allows(self, headers: Mapping[str, str]) -> bool:
        """True when the bearer token or the secret header matches one of the tokens."""
        candidates = (shared.bearer(headers.get("authorization")), headers.get(self.header, ""))
        # Both are checked whatever the first gave; an absent one cannot match (no token is "").
        return sum(self._tokens.level(candidate) for candidate in candidates) > 0
