"""Calls to external APIs (GitHub, LLM providers, ...) that an invocation's logs report.

`ApiCall` is the record; `api_call` builds one for every source alike: it derives `ok` and
`rate_limited`, keeps a provider, model or endpoint only when it is a name (at most 200
characters, `values.MAX_NAME`: they are key columns of `api_usage_daily`), and infers a
missing provider from the model. The structured logger's typed record
(`LogLine.kind == "api_call"`) is read here (`api_call_record`); LLM usage objects in `llm.py`,
rate-limit readings in `rate_limits.py`, free text in `rules.py`.

Tokens are split into disjoint kinds, whatever the provider's own convention, so that each kind
is priced at its own rate and sums add up: `tokens_in` are input tokens neither read from nor
written to a prompt cache, `cache_read_tokens` and `cache_write_tokens` the cached ones (the
three together are the whole input), `tokens_out` every output token (reasoning included).

A line that only reports a reading, such as `github ratelimit remaining=4981 limit=5000`, is an
`ApiCall` too, with nothing but `provider` and rate-limit fields set (no endpoint, model,
status or tokens): storage decides whether such readings count as calls.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from pipeline.formats.invocation import LogLine
from pipeline.transform.extract import values
from pipeline.transform.extract.values import MAX_NAME

UNKNOWN_PROVIDER = "unknown"
"""Provider of a record that names neither a provider nor a model: a typed record without
either, or a rate-limit reading whose line does not say whose limit it is."""
LLM_PROVIDER = "llm"
"""Provider of a model whose name no rule of `provider_for_model` recognises."""

_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
_WORKERS_AI_PREFIXES = ("@cf/", "@hf/")


class ApiCall(NamedTuple):
    """One call, or one reading about calls (see the module). A NamedTuple rather than a frozen
    dataclass, unlike the decoder's records: one is built for every other log line, and a frozen
    dataclass's `__init__` (one `object.__setattr__` per field) costs four times as much."""

    provider: str
    endpoint: str | None
    """`METHOD /path/template` for free-text calls (see `endpoints.py`); as logged otherwise."""
    model: str | None
    status: int | None
    """HTTP status 0..999; 0 or None: no response (see `ok`)."""
    duration_ms: float | None
    tokens_in: int | None
    """Input tokens billed at the model's plain input rate: not read from or written to a cache."""
    tokens_out: int | None
    rate_limit_remaining: int | None
    ok: bool
    """False when status >= 400, or when there is no status (0 or None) and the line reports an
    error (level `error`, or a non-empty `error` field or group)."""
    rate_limited: bool
    """Status 429, a rate-limit reading of 0 remaining, or a reading that says to wait (a
    `Retry-After`, or another of the provider's limits at 0)."""
    ts_ms: int | None
    """The log line's time, else the invocation's."""
    cache_read_tokens: int | None = None
    """Input tokens read from a prompt cache (Anthropic `cache_read_input_tokens`, OpenAI
    `cached_tokens`, Gemini `cachedContentTokenCount`)."""
    cache_write_tokens: int | None = None
    """Input tokens written to a prompt cache (Anthropic `cache_creation_input_tokens`)."""
    cache_write_1h_tokens: int | None = None
    """Of `cache_write_tokens`, those written to Anthropic's one-hour cache (priced at the
    `cache_write_1h` rate); the others are written for the default five minutes."""
    rate_limit_limit: int | None = None
    rate_limit_reset_ms: int | None = None
    """When the limit resets, or when to retry (epoch ms): `X-RateLimit-Reset`, `Retry-After`."""
    cost_usd: Decimal | None = None
    """Set by the `Extractor` from its price table; None for unknown models, for calls without
    a model or token counts, and for calls with cache tokens the table has no price for. Never
    estimated."""


def api_call(
    provider: str | None,
    endpoint: str | None,
    model: str | None,
    status: int | None,
    duration_ms: float | None,
    tokens_in: int | None,
    tokens_out: int | None,
    rate_limit_remaining: int | None,
    error: bool,
    ts_ms: int | None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    cache_write_1h_tokens: int | None = None,
    rate_limit_limit: int | None = None,
    rate_limit_reset_ms: int | None = None,
    limited: bool = False,
) -> ApiCall:
    """An `ApiCall` with names checked, the provider inferred when absent (from the model, else
    `unknown`), and `ok` and `rate_limited` derived, so every rule judges alike. `limited`: the
    reading says to wait, whatever the status and remaining count."""
    # Length only, inline: this runs for every call found. (A NUL cannot reach here from the
    # pipeline: the decoder replaces it, and `values.name` refuses it in hand-built data.)
    if model is not None and len(model) > MAX_NAME:
        model = None
    if endpoint is not None and len(endpoint) > MAX_NAME:
        endpoint = None
    if not provider or len(provider) > MAX_NAME:
        provider = provider_for_model(model) if model else UNKNOWN_PROVIDER
    failed = status >= 400 if status else error
    rate_limited = limited or status == 429 or rate_limit_remaining == 0
    return new_call(
        ApiCall,
        (
            provider,
            endpoint,
            model,
            status,
            duration_ms,
            tokens_in,
            tokens_out,
            rate_limit_remaining,
            not failed,
            rate_limited,
            ts_ms,
            cache_read_tokens,
            cache_write_tokens,
            cache_write_1h_tokens,
            rate_limit_limit,
            rate_limit_reset_ms,
            None,
        ),
    )


new_call = tuple.__new__
"""`new_call(ApiCall, (every field, in order))`: what `ApiCall(...)` does, without the Python
frame of the generated `__new__` (a third of the cost of building one on the hot path)."""


def priced(call: ApiCall, cost_usd: Decimal) -> ApiCall:
    """`call` with its cost (a slice and a tuple: `_replace` goes through a dict, slower)."""
    return new_call(ApiCall, (*call[:-1], cost_usd))


def provider_for_model(model: str) -> str:
    """`anthropic` for claude-*, `openai` for gpt-*, o1*, o3*, o4*, chatgpt-*, `google` for
    gemini-*, `workers-ai` for Cloudflare Workers AI's @cf/* and @hf/*, else `llm`."""
    name = model[:8].lower()  # the longest prefix tested; a model name can be any log text
    if name.startswith("claude-"):
        return "anthropic"
    if name.startswith(_OPENAI_PREFIXES):
        return "openai"
    if name.startswith("gemini-"):
        return "google"
    if name.startswith(_WORKERS_AI_PREFIXES):
        return "workers-ai"
    return LLM_PROVIDER


def api_call_record(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """The structured logger's `api_call` record. Fields of the wrong type read as None: the
    decoder checks them, but a line built elsewhere may not have been."""
    kind = line.kind
    # `is None` first: most lines have no kind, and `None != str` is a slow rich comparison.
    if kind is None or kind != "api_call" or line.data is None:
        return None
    get = line.data.get
    return api_call(
        values.text(get("provider")),
        values.text(get("endpoint")),
        values.text(get("model")),
        values.status(get("status")),
        values.duration(get("duration_ms")),
        values.count(get("tokens_in")),
        values.count(get("tokens_out")),
        values.count(get("rate_limit_remaining")),
        line.level == "error" or bool(get("error")),
        ts_ms,
    )
