"""Property: whatever a log line holds, extraction returns well-typed records and never raises.

Lines are built directly (not decoded), so typed records can carry fields of any type, and text
is assembled from the fragments the rules look for, so that the rules' slow paths (regex,
conversions, endpoint templates) run, not only their prechecks.
"""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.formats.invocation import Invocation, LogLine
from pipeline.transform.extract import ApiCall, Extractor, Scan
from pipeline.transform.extract.reset_times import MAX_RESET_MS, MIN_RESET_MS
from pipeline.transform.extract.values import MAX_COUNT, MAX_NAME

EXTRACTOR = Extractor.from_files()

FRAGMENTS = [
    "GET ",
    "POST ",
    "https://api.github.com",
    "/repos/",
    "/orgs/",
    "/contents/",
    "acme/api",
    "/",
    "?",
    "#",
    " 200",
    " 429",
    " 9999",
    " in ",
    "ms",
    " failed",
    "github ratelimit remaining=",
    "GitHub API rate limit remaining: ",
    "x-ratelimit-remaining: ",
    "X-RateLimit-Limit=",
    "x-ratelimit-reset: ",
    "retry-after: ",
    "anthropic-ratelimit-requests-reset: ",
    "x-ratelimit-remaining-tokens=",
    "limit=",
    "2025-11-29T00:01:00Z",
    "6m0s",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "1764378000",
    "llm usage model=",
    " input_tokens=",
    " output_tokens=",
    "claude-sonnet-4-5",
    "gpt-4o",
    "-20250929",
    "scan ",
    "started",
    "completed",
    "failed",
    " repo=",
    " files=",
    " duration_ms=",
    "12",
    "9" * 40,
    "0",
    ".5",
    "²",
    "٣",
    "e9",
    "\n",
    "\x00",
    " ",
]
words = st.sampled_from(FRAGMENTS) | st.text(max_size=12)
numbers = st.integers(min_value=-5, max_value=10**25).map(str) | st.sampled_from(
    ["", "²", "1.5", "1e3", "inf", "0", "9" * 5000]
)
# The shapes the built-in rules read, with every part drawn freely: these reach the rules'
# conversions, endpoint templates and record building, not only their prechecks.
shaped = st.one_of(
    st.builds(
        "{} {}/repos/{}/{} {} in {}ms".format,
        st.sampled_from(["GET", "POST", "get", "PATCH"]),
        st.sampled_from(["", "https://api.github.com"]),
        words,
        words,
        numbers,
        numbers,
    ),
    st.builds("GET /orgs/{} failed: {}".format, words, words),
    st.builds("github ratelimit remaining={} limit=5000".format, numbers),
    st.builds(
        "{}: {} x-ratelimit-limit={} x-ratelimit-reset: {}".format,
        st.sampled_from(["x-ratelimit-remaining", "X-RateLimit-Remaining", "retry-after"]),
        numbers,
        numbers,
        numbers | st.sampled_from(["1s", "6m0s", "2025-11-29T00:01:00Z", "0.5", "nan"]),
    ),
    st.builds(
        "llm usage model={} input_tokens={} output_tokens={}".format, words, numbers, numbers
    ),
    st.builds(
        "scan {} repo={} files={} duration_ms={}".format,
        st.sampled_from(["started", "completed", "failed", "queued"]),
        words,
        numbers,
        numbers,
    ),
)
texts = st.one_of(
    st.text(max_size=200),
    st.lists(words, max_size=25).map("".join),
    shaped,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["200", "started", "completed", "Failed", "claude-haiku-4-5", "gpt-4o", "llm_usage", "1e3"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
KEYS = [
    "provider",
    "endpoint",
    "model",
    "status",
    "duration_ms",
    "tokens_in",
    "tokens_out",
    "rate_limit_remaining",
    "error",
    "event",
    "usage",
    "repo",
    "files",
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "usageMetadata",
    "modelVersion",
    "headers",
    "x-ratelimit-remaining",
    "retry-after",
    "x-github-request-id",
]
usage = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        for key in (
            "input_tokens",
            "output_tokens",
            "prompt_tokens",
            "completion_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cache_creation",
            "input_tokens_details",
            "prompt_tokens_details",
        )
    },
)
gemini = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        for key in (
            "promptTokenCount",
            "cachedContentTokenCount",
            "toolUsePromptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
        )
    },
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "x-ratelimit-remaining",
            "x-ratelimit-limit",
            "x-ratelimit-reset",
            "retry-after",
            "X-RateLimit-Remaining",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-remaining",
            "x-ratelimit-remaining-requests",
            "x-github-request-id",
        ]
    ),
    json_values | st.sampled_from(["0", "12", "1s", "2025-11-29T00:01:00Z", "1764378000"]),
    max_size=5,
)
data = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), json_values, max_size=8),
    st.fixed_dictionaries(
        {"event": st.just("llm_usage")},
        optional={
            "model": json_values | st.sampled_from(["gpt-4o", ""]),
            "usage": usage | json_values,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "model": json_values
            | st.sampled_from(["claude-haiku-4-5", "gpt-4o", "@cf/meta/llama", "x" * 201]),
            "modelVersion": json_values | st.just("gemini-2.5-flash"),
            "usage": usage | json_values,
            "usageMetadata": gemini | json_values,
            "input_tokens": json_values,
            "prompt_tokens": json_values,
        },
    ),
    headers,
    st.fixed_dictionaries({"headers": headers}, optional={"status": json_values}),
)
lines = st.builds(
    LogLine,
    timestamp_ms=st.none() | st.integers(),
    level=st.sampled_from(["debug", "info", "log", "warn", "error"]),
    text=texts,
    data=data,
    kind=st.sampled_from([None, "api_call", "scan", "timer", "other"]),
)


def well_typed_call(call: ApiCall) -> None:
    assert type(call.provider) is str
    assert call.provider
    for name in ("provider", "endpoint", "model"):
        value = getattr(call, name)
        assert value is None or (type(value) is str and value)
        # Key columns of api_usage_daily: bounded. (NUL is the decoder's to replace: these
        # lines are built directly.)
        assert value is None or len(value) <= MAX_NAME
    assert call.status is None or (type(call.status) is int and 0 <= call.status <= 999)
    for name in (
        "tokens_in",
        "tokens_out",
        "rate_limit_remaining",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "rate_limit_limit",
    ):
        value = getattr(call, name)
        assert value is None or (type(value) is int and 0 <= value <= MAX_COUNT)
    reset = call.rate_limit_reset_ms
    assert reset is None or (type(reset) is int and MIN_RESET_MS <= reset < MAX_RESET_MS)
    duration = call.duration_ms
    assert duration is None or (type(duration) in (int, float) and 0 <= duration <= MAX_COUNT)
    assert type(call.ok) is bool
    assert type(call.rate_limited) is bool
    if call.status:
        assert call.ok == (call.status < 400)
    if call.status == 429 or call.rate_limit_remaining == 0:
        assert call.rate_limited
    if call.rate_limited and call.status != 429 and call.rate_limit_remaining != 0:
        # Only a reading says to wait otherwise (a Retry-After, a token limit at 0).
        assert (call.endpoint, call.model, call.status) == (None, None, None)
    assert call.cost_usd is None or (type(call.cost_usd) is Decimal and call.cost_usd >= 0)
    assert call.cost_usd is None or call.model is not None


def well_typed_scan(scan: Scan) -> None:
    assert scan.status in ("started", "completed", "failed")
    assert scan.repo is None or (type(scan.repo) is str and scan.repo)
    assert scan.files is None or (type(scan.files) is int and 0 <= scan.files <= MAX_COUNT)
    duration = scan.duration_ms
    assert duration is None or (0 <= duration <= MAX_COUNT and math.isfinite(duration))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, max_size=4), st.none() | st.integers())
def test_extract_never_raises(logs: list[LogLine], ts: int | None) -> None:
    inv = Invocation("w", "fetch", ts, "ok", logs=tuple(logs))
    extracted = EXTRACTOR.extract(inv)
    assert len(extracted.api_calls) + len(extracted.scans) <= len(logs)
    for call in extracted.api_calls:
        well_typed_call(call)
    for scan in extracted.scans:
        well_typed_scan(scan)
    times = {line.timestamp_ms if line.timestamp_ms is not None else ts for line in logs}
    found: list[ApiCall | Scan] = [*extracted.api_calls, *extracted.scans]
    assert all(record.ts_ms in times for record in found)
