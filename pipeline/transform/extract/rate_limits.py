"""Rate-limit readings: what an API's rate-limit response headers said, as a Worker logged them.

Two rules, each giving a reading: an `ApiCall` with only `provider` and its rate-limit fields
(`rate_limit_remaining`, `rate_limit_limit`, `rate_limit_reset_ms`, `rate_limited`):

- `rate_limit_data`: a headers object in `LogLine.data`, logged as it is
  (`console.log(Object.fromEntries(response.headers))`) or under `headers`
  (`console.log("github", {status, headers})`). Header names in lower case (as `Headers` gives
  them) or in their usual spelling (`X-RateLimit-Remaining`, `Retry-After`).
- `rate_limit_text`: free text, in any case, with `:` or `=` between a name and its value:
  logged headers (`x-ratelimit-remaining: 12`, `X-RateLimit-Limit=5000`, `retry-after: 30`),
  and the same words written out (`GitHub API rate limit remaining: 12`,
  `github ratelimit remaining=4981 limit=5000`, `Rate limit: 60, remaining: 0, reset: ..`).
  Plain `remaining`, `limit` and `reset` count only on a line that also says `rate limit`
  (`ratelimit`, `rate-limit`, `rate_limit`) or has one of the header names. A rule tried last,
  after the free-text rules of `rules.toml`, so a request line that also shows a header stays
  a request. Its precheck is four substring tests (`imit`, `IMIT`, `etry`, `ETRY`).

What is read:

- remaining: `x-ratelimit-remaining` (GitHub and most APIs), `ratelimit-remaining` (the IETF
  draft), `x-ratelimit-remaining-requests` (OpenAI), `anthropic-ratelimit-requests-remaining`;
- limit: the same names with `limit`;
- reset: the same names with `reset`, and `retry-after`.

The remaining count is of requests. Token limits (OpenAI's `...-tokens`, Anthropic's `tokens`,
`input-tokens`, `output-tokens`) are not stored, but one at 0 marks the reading rate-limited,
as does a `retry-after` (or, in a headers object, a `status` of 429 beside it).

A reset is kept as a moment (epoch ms) when its value reads as one (`reset_times`); both a
reset and a `retry-after`: the later of the two.

The provider: `anthropic` for `anthropic-ratelimit-*` headers, `openai` for
`x-ratelimit-*-requests`/`-tokens`; in a headers object, `github` when `x-github-request-id` is
there, else the object's `provider` field; else the first of `github`, `anthropic`, `openai`
that the line names as a word (`GitHub API rate limit ...`); else `unknown`, the documented
fallback (`api_calls.UNKNOWN_PROVIDER`): the line does not say whose limit it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pipeline.formats.invocation import JSON, LogLine
from pipeline.transform.extract import values
from pipeline.transform.extract.api_calls import UNKNOWN_PROVIDER, ApiCall, new_call
from pipeline.transform.extract.reset_times import later, reset_ms

_MAX_DIGITS = len(str(values.MAX_COUNT))
_MAX_MATCHES = 16
"""Name-value pairs read from one line at most: a hostile line repeating them costs no more."""

_REMAINING = (
    "x-ratelimit-remaining",
    "ratelimit-remaining",
    "x-ratelimit-remaining-requests",
    "anthropic-ratelimit-requests-remaining",
)
_LIMIT = (
    "x-ratelimit-limit",
    "ratelimit-limit",
    "x-ratelimit-limit-requests",
    "anthropic-ratelimit-requests-limit",
)
_RESET = (
    "x-ratelimit-reset",
    "ratelimit-reset",
    "x-ratelimit-reset-requests",
    "anthropic-ratelimit-requests-reset",
)
_TOKENS_REMAINING = (
    "x-ratelimit-remaining-tokens",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-remaining",
)
_OPENAI = ("x-ratelimit-remaining-requests", "x-ratelimit-limit-requests", _TOKENS_REMAINING[0])
HEADER_KEYS = frozenset(
    (
        *_REMAINING,
        *_LIMIT,
        *_RESET,
        *_TOKENS_REMAINING,
        "retry-after",
        "X-RateLimit-Remaining",
        "X-RateLimit-Limit",
        "X-RateLimit-Reset",
        "RateLimit-Remaining",
        "RateLimit-Limit",
        "RateLimit-Reset",
        "Retry-After",
    )
)
"""A headers object has one of these keys: one set test rejects every other object."""

_PAIR = re.compile(
    r"""
    (?=[aAlLrRxX])  # every name starts so: lets the engine skip other positions quickly
    (?:
        \banthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)
            -(remaining|limit|reset)
      | \b(?:x-)?rate[-_ ]?limit
            (?:[-_ ](remaining|limit|reset)(?:-(requests|tokens))?)?
      | \b(retry[-_ ]?after)
      | \b(remaining|limit|reset)
    )
    \b"?[ \t]*[:=][ \t]*"?
    (
        \d[\w.:+-]{0,39}
      | [a-z]{3},[ ]\d{1,2}[ ][a-z]{3}[ ]\d{4}[ ]\d\d:\d\d:\d\d[ ]GMT
    )
    """,
    re.IGNORECASE | re.ASCII | re.VERBOSE,
).finditer
"""A name and its value. Groups, read from one `groups()` tuple (faster than by name): the
Anthropic scope and field, the field and OpenAI scope of `x-ratelimit-*`, `retry-after`, a
plain name, the value."""
_CONTEXT = re.compile(r"\brate[-_ ]?limit", re.IGNORECASE | re.ASCII).search
_NAMED = re.compile(r"\b(github|anthropic|openai)\b", re.IGNORECASE | re.ASCII).search


def rate_limit_data(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """The reading of a headers object in `LogLine.data` (see the module)."""
    data = line.data
    if data is None:
        return None
    headers = data
    if HEADER_KEYS.isdisjoint(data):
        nested = data.get("headers")
        if type(nested) is not dict or HEADER_KEYS.isdisjoint(nested):
            return None
        headers = nested
    low = {key.lower(): value for key, value in headers.items()}
    remaining = _first(low, _REMAINING, values.count)
    limit = _first(low, _LIMIT, values.count)
    reset = _first(low, _RESET, lambda value: reset_ms(value, ts_ms))
    limited = any(values.count(low.get(key)) == 0 for key in _TOKENS_REMAINING)
    retry = low.get("retry-after")
    if retry is not None:
        limited = True
        reset = later(reset, reset_ms(retry, ts_ms))
    if headers is not data and values.status(data.get("status")) == 429:
        limited = True
    if remaining is None and limit is None and reset is None and not limited:
        return None
    provider: str | None
    if "x-github-request-id" in low:
        provider = "github"
    elif any(key.startswith("anthropic-ratelimit-") for key in low):
        provider = "anthropic"
    elif any(key in low for key in _OPENAI):
        provider = "openai"
    else:
        provider = values.name(data.get("provider")) or _named(line.text)
    return _reading(provider, remaining, limit, reset, limited, ts_ms)


def rate_limit_text(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """The reading of a free-text line (see the module)."""
    text = line.text
    # `limit`/`Limit`/`LIMIT` and `retry`/`Retry`/`RETRY`: C-speed scans that reject nearly
    # every line before the regex runs.
    if "imit" not in text and "IMIT" not in text and "etry" not in text and "ETRY" not in text:
        return None
    remaining = limit = reset = None
    limited = keyed = False
    provider: str | None = None
    plain: list[tuple[str, str]] | None = None
    for number, match in enumerate(_PAIR(text)):
        if number == _MAX_MATCHES:
            break
        anthropic, anthropic_field, field, openai, retry, name, value = match.groups()
        if name is not None:  # plain `remaining`, `limit`, `reset`: only with context
            if plain is None:
                plain = []
            plain.append((name, value))
            continue
        keyed = True
        if retry is not None:
            limited = True
            reset = later(reset, reset_ms(value, ts_ms))
            continue
        if anthropic is not None:
            provider, scope, field = "anthropic", anthropic, anthropic_field
        else:
            scope = openai
            if openai is not None and provider is None:
                provider = "openai"
        if scope is not None and scope[0] not in "rR":  # a token limit, not `requests`
            if field is not None and field[2] in "mM" and _count(value) == 0:
                limited = True
            continue
        remaining, limit, reset = _put(field, value, remaining, limit, reset, ts_ms)
    if plain is not None and (keyed or _CONTEXT(text)):
        for name, value in plain:
            remaining, limit, reset = _put(name, value, remaining, limit, reset, ts_ms)
    if remaining is None and limit is None and reset is None and not limited:
        return None
    return _reading(provider or _named(text), remaining, limit, reset, limited, ts_ms)


def _put(
    field: str | None,
    value: str,
    remaining: int | None,
    limit: int | None,
    reset: int | None,
    ts_ms: int | None,
) -> tuple[int | None, int | None, int | None]:
    """`value` read as `field` (`remaining`, `limit`, `reset` in any case; None: a bare
    `rate limit`, which is the limit) into the first two if not set yet, or the later reset.
    By letters, not `lower()`: remaining and limit have an `m` third, reset an `s`."""
    if field is None or field[2] in "mM":
        if field is not None and field[0] in "rR":
            return (_count(value) if remaining is None else remaining), limit, reset
        return remaining, (_count(value) if limit is None else limit), reset
    return remaining, limit, later(reset, reset_ms(value, ts_ms))


def _count(value: str) -> int | None:
    """A count from a matched value: ASCII already (the pattern is ASCII-only)."""
    return int(value) if value.isdigit() and len(value) <= _MAX_DIGITS else None


def _first(
    headers: dict[str, JSON], names: tuple[str, ...], read: Callable[[JSON], int | None]
) -> int | None:
    """`read` of the first of `names` that `headers` has."""
    for name in names:
        value = headers.get(name)
        if value is not None:
            return read(value)
    return None


def _named(text: str) -> str | None:
    found = _NAMED(text)
    return found[1].lower() if found is not None else None


def _reading(
    provider: str | None,
    remaining: int | None,
    limit: int | None,
    reset: int | None,
    limited: bool,
    ts_ms: int | None,
) -> ApiCall:
    """A reading: no endpoint, model, status or tokens. Built directly rather than through
    `api_call` (whose checks it does not need: the provider is a name already)."""
    return new_call(ApiCall, (
        provider or UNKNOWN_PROVIDER, None, None, None, None, None, None, remaining, True,
        limited or remaining == 0, ts_ms, None, None, None, limit, reset, None,
    ))  # fmt: skip
