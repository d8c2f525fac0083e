"""Rate-limit readings (issue 16, item 4): the lines and logged header objects that report an
API's rate limit, read whatever their case and separator, with the provider when the line says
it, and every one going through the whole extractor (decoded from a trace item), so each case
failed before `pipeline/transform/extract/rate_limits.py` existed.

The header names and value formats are the providers' documented ones:
- GitHub, "Rate limits for the REST API" (github/docs
  content/rest/using-the-rest-api/rate-limits-for-the-rest-api.md): `x-ratelimit-limit`,
  `x-ratelimit-remaining`, `x-ratelimit-used`, `x-ratelimit-reset` (UTC epoch seconds),
  `x-ratelimit-resource`, and `retry-after` (seconds) on secondary limits; every response has
  `x-github-request-id`;
- OpenAI, "Rate limits": `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
  `x-ratelimit-reset-requests` (a duration: `1s`, `6m0s`, `12ms`) and the same for `-tokens`;
- Anthropic, "Rate limits": `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` (RFC
  3339), the same for `tokens`, `input-tokens`, `output-tokens`, and `retry-after` on a 429;
- the IETF draft "RateLimit header fields for HTTP": `RateLimit-Limit`, `RateLimit-Remaining`,
  `RateLimit-Reset` (seconds from now); `Retry-After` is RFC 9110's (seconds or an HTTP date).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from pipeline.formats.decode import decode
from pipeline.formats.invocation import LogLine
from pipeline.transform.extract import ApiCall, Extractor
from pipeline.transform.extract.rate_limits import rate_limit_data, rate_limit_text
from pipeline.transform.extract.reset_times import reset_ms

TS = 1_764_374_400_000  # 2025-11-29T00:00:00Z
LINE_TS = TS + 7
EXTRACTOR = Extractor.from_files()


def extract(*message: Any, level: str = "log") -> list[ApiCall]:
    """The API calls of a trace item with one log line of these console arguments."""
    item = {
        "scriptName": "api",
        "outcome": "ok",
        "eventTimestamp": TS,
        "event": None,
        "logs": [{"timestamp": LINE_TS, "level": level, "message": list(message)}],
        "exceptions": [],
    }
    [invocation] = decode(orjson.dumps(item))
    return EXTRACTOR.extract(invocation).api_calls


def reading(
    provider: str = "unknown",
    remaining: int | None = None,
    limit: int | None = None,
    reset: int | None = None,
    limited: bool = False,
) -> ApiCall:
    return ApiCall(
        provider, None, None, None, None, None, None, remaining, True, limited, LINE_TS,
        rate_limit_limit=limit, rate_limit_reset_ms=reset,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The line the built-in rule missed, as issue 16 found it.
        ("GitHub API rate limit remaining: 12", reading("github", 12)),
        ("github ratelimit remaining=4981 limit=5000", reading("github", 4981, 5000)),
        ("github ratelimit remaining=0 limit=5000", reading("github", 0, 5000, limited=True)),
        ("[webhooks] github ratelimit remaining=12", reading("github", 12)),
        ("GITHUB RATE LIMIT REMAINING=12", reading("github", 12)),
        ("github rate-limit remaining: 7", reading("github", 7)),
        ("github ratelimit limit=5000", reading("github", limit=5000)),
        # Logged response headers: `=` or `:`, any case; no provider named: `unknown`.
        ("x-ratelimit-remaining: 12", reading(remaining=12)),
        ("X-RateLimit-Remaining: 12", reading(remaining=12)),
        ("X-RATELIMIT-REMAINING=12", reading(remaining=12)),
        ("X-RateLimit-Limit: 5000", reading(limit=5000)),
        ("x-ratelimit-reset=1764378000", reading(reset=1_764_378_000_000)),
        (
            "X-RateLimit-Limit: 5000, X-RateLimit-Remaining: 0, X-RateLimit-Reset: 1764378000",
            reading(remaining=0, limit=5000, reset=1_764_378_000_000, limited=True),
        ),
        (
            "x-ratelimit-limit: 60 x-ratelimit-remaining: 59 x-github-request-id: CE0C:2F0A:1",
            reading("github", 59, 60),
        ),
        ('response headers {"x-ratelimit-remaining":"4999"', reading(remaining=4999)),
        # Retry-After: rate-limited, and when to retry.
        ("retry-after: 30", reading(reset=LINE_TS + 30_000, limited=True)),
        ("Retry-After=120", reading(reset=LINE_TS + 120_000, limited=True)),
        (
            "Retry-After: Sat, 29 Nov 2025 00:05:00 GMT",
            reading(reset=TS + 300_000, limited=True),
        ),
        (
            "secondary rate limit from api.github.com; retry-after: 60",
            reading("github", reset=LINE_TS + 60_000, limited=True),
        ),
        # The IETF draft's structured field, and the words written out.
        (
            "RateLimit: limit=100, remaining=50, reset=5",
            reading("unknown", 50, 100, LINE_TS + 5000),
        ),
        ("Rate limit: 60, remaining: 0", reading("unknown", 0, 60, limited=True)),
        # OpenAI and Anthropic headers: the requests window; tokens only mark a limit reached.
        (
            "x-ratelimit-limit-requests: 60 x-ratelimit-remaining-requests: 59 "
            "x-ratelimit-reset-requests: 1s x-ratelimit-remaining-tokens: 149984",
            reading("openai", 59, 60, LINE_TS + 1000),
        ),
        (
            "x-ratelimit-remaining-requests=3 x-ratelimit-remaining-tokens=0",
            reading("openai", 3, limited=True),
        ),
        (
            "anthropic-ratelimit-requests-remaining: 49 anthropic-ratelimit-requests-limit: 50 "
            "anthropic-ratelimit-requests-reset: 2025-11-29T00:01:00Z",
            reading("anthropic", 49, 50, TS + 60_000),
        ),
        (
            "anthropic-ratelimit-requests-remaining: 12 anthropic-ratelimit-tokens-remaining: 0",
            reading("anthropic", 12, limited=True),
        ),
        ("OpenAI rate limit remaining: 3", reading("openai", 3)),
        # A line naming no provider this rule knows is `unknown`, never GitHub.
        ("gitlab ratelimit remaining=10", reading(remaining=10)),
        ("mygithub ratelimit remaining=10", reading(remaining=10)),
    ],
)
def test_rate_limit_lines(text: str, expected: ApiCall) -> None:
    assert extract(text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "github ratelimit remaining=-1",
        "github ratelimit remaining= limit=",
        "rate limit exceeded",
        "rate limited, backing off",
        "remaining: 12",
        "items remaining=3, limit=10",
        "the accurate limit: 5",
        "x-ratelimit-remaining: none",
        "retrying after 30s",
        "retry after the next deploy",
        "time limit: 30s reached",
        "handled request",
    ],
)
def test_rate_limit_near_misses(text: str) -> None:
    assert extract(text) == []


def test_a_request_line_stays_a_request_when_it_shows_a_header_too() -> None:
    [call] = extract("GET /repos/acme/api 200 in 12ms x-ratelimit-remaining: 4999")
    assert (call.endpoint, call.status, call.rate_limit_remaining) == (
        "GET /repos/{owner}/{repo}",
        200,
        None,
    )


GITHUB_HEADERS = {
    "content-type": "application/json; charset=utf-8",
    "x-github-request-id": "CE0C:2F0A:1B2C3D:1C3D4E:6929A3C0",
    "x-ratelimit-limit": "5000",
    "x-ratelimit-remaining": "4999",
    "x-ratelimit-reset": "1764378000",
    "x-ratelimit-resource": "core",
    "x-ratelimit-used": "1",
}
OPENAI_HEADERS = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
ANTHROPIC_429_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "0",
    "anthropic-ratelimit-requests-reset": "2025-11-29T00:01:00Z",
    "anthropic-ratelimit-tokens-remaining": "0",
    "retry-after": "45",
}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # `console.log(Object.fromEntries(response.headers))`: an object argument.
        ([GITHUB_HEADERS], reading("github", 4999, 5000, 1_764_378_000_000)),
        # The same, as a JSON string.
        ([orjson.dumps(GITHUB_HEADERS).decode()], reading("github", 4999, 5000, 1_764_378_000_000)),
        # Under `headers`, with the response's status: a 429 is a limit reached.
        (
            ["upstream", {"status": 429, "headers": {"x-ratelimit-remaining": "3"}}],
            reading(remaining=3, limited=True),
        ),
        ([OPENAI_HEADERS], reading("openai", 59, 60, LINE_TS + 1000)),
        # The later of the reset and the retry-after.
        ([ANTHROPIC_429_HEADERS], reading("anthropic", 0, 50, TS + 60_000, limited=True)),
        # Header names in their usual spelling (a Python client's dict), numbers as numbers.
        ([{"X-RateLimit-Remaining": 12, "X-RateLimit-Limit": 60}], reading(remaining=12, limit=60)),
        ([{"Retry-After": "2"}], reading(reset=LINE_TS + 2000, limited=True)),
        # The IETF draft's names; the provider from the object, or named by the line.
        (
            [
                {
                    "provider": "stripe",
                    "headers": {"RateLimit-Remaining": "5", "RateLimit-Reset": "9"},
                }
            ],
            reading("stripe", 5, reset=LINE_TS + 9000),
        ),
        (
            ["github response", {"headers": {"x-ratelimit-remaining": "17"}}],
            reading("github", 17),
        ),
    ],
)
def test_logged_header_objects(message: list[Any], expected: ApiCall) -> None:
    assert extract(*message) == [expected]


@pytest.mark.parametrize(
    "data",
    [
        {"headers": {"content-type": "text/html"}},
        {"remaining": 5, "limit": 10},
        {"x-ratelimit-remaining": "many"},
    ],
)
def test_objects_that_are_no_reading(data: dict[str, Any]) -> None:
    assert extract("response", data) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1764378000", 1_764_378_000_000),  # GitHub: epoch seconds
        (1764378000, 1_764_378_000_000),
        ("1764378000123", 1_764_378_000_123),  # epoch milliseconds
        ("30", LINE_TS + 30_000),  # a delay in seconds (Retry-After, the IETF draft)
        ("1.5", LINE_TS + 1500),
        (2.5, LINE_TS + 2500),
        ("6m0s", LINE_TS + 360_000),  # OpenAI's durations
        ("1h2m3.5s", LINE_TS + 3_723_500),
        ("12ms", LINE_TS + 12),
        ("2025-11-29T00:01:00Z", TS + 60_000),  # Anthropic: RFC 3339
        ("2025-11-29T01:01:00+01:00", TS + 60_000),
        ("Sat, 29 Nov 2025 00:05:00 GMT", TS + 300_000),  # an HTTP date
        ("2025-11-29T00:01:00", None),  # no offset: no moment
        ("-5", None),
        ("1e3", None),
        ("soon", None),
        ("99999999999", None),  # neither seconds nor milliseconds of 2000..2199
        ("31622400", LINE_TS + 31_622_400_000),  # a year: the longest delay believed
        ("31622401", None),
        ("999999999h", None),
        ("0s", LINE_TS),
        ("", None),
        (True, None),
        (None, None),
        ("9" * 5000, None),
    ],
)
def test_reset_values(value: Any, expected: int | None) -> None:
    assert reset_ms(value, LINE_TS) == expected


def test_a_delay_needs_the_lines_time() -> None:
    assert reset_ms("30", None) is None
    assert reset_ms("1764378000", None) == 1_764_378_000_000


def test_a_reading_with_no_time_still_reads() -> None:
    found = rate_limit_text(LogLine(None, "log", "x-ratelimit-remaining: 5 retry-after: 3"), None)
    assert found is not None
    assert (found.rate_limit_remaining, found.rate_limit_reset_ms, found.rate_limited) == (
        5,
        None,
        True,
    )


@pytest.mark.parametrize(
    "text",
    [
        "x-ratelimit-remaining: 1 " * 20_000,
        "ratelimit " * 30_000,
        "rate limit remaining" * 15_000,
        "retry-after:" * 25_000,
        "limit=" * 50_000,
        "x-ratelimit-remaining:" + " " * 200_000,
        "LIMIT" * 60_000,
    ],
)
def test_text_rule_is_linear_on_hostile_lines(text: str) -> None:
    line = LogLine(TS, "log", text)
    started = time.perf_counter()
    rate_limit_text(line, TS)
    assert time.perf_counter() - started < 1.0


def test_data_rule_ignores_lines_without_data_or_header_keys() -> None:
    assert rate_limit_data(LogLine(TS, "log", "x-ratelimit-remaining: 5"), TS) is None
    assert rate_limit_data(LogLine(TS, "log", "x", {"ms": 12}), TS) is None
