"""Calls to external APIs (GitHub, LLM providers, ...) that an invocation's logs report.

`ApiCall` is the record; `api_call` builds one and derives `ok` and `rate_limited` the same way
for every source. Two rules here read structured data (the free-text rules are in `rules.py`):

- `api_call_record`: the structured logger's typed record (`LogLine.kind == "api_call"`);
- `llm_usage_data`: application JSON `{"event": "llm_usage", "model": .., "usage": {..}}`, as
  `console.log(JSON.stringify(..))` leaves it in `LogLine.data`. `usage` may use Anthropic's
  names (`input_tokens`, `output_tokens`) or OpenAI's (`prompt_tokens`, `completion_tokens`).

A line that only reports a reading, such as `github ratelimit remaining=4981 limit=5000`, is an
`ApiCall` too, with nothing but `provider` and `rate_limit_remaining` set (no endpoint, model,
status or tokens): storage decides whether such readings count as calls.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from pipeline.extract import values
from pipeline.records import LogLine

UNKNOWN_PROVIDER = "unknown"
"""Provider of a typed record that names neither a provider nor a model."""
LLM_PROVIDER = "llm"
"""Provider of a model whose name no rule of `provider_for_model` recognises."""

_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")


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
    tokens_out: int | None
    rate_limit_remaining: int | None
    ok: bool
    """False when status >= 400, or when there is no status (0 or None) and the line reports an
    error (level `error`, or a non-empty `error` field or group)."""
    rate_limited: bool
    """Status 429, or a rate-limit reading of 0 remaining."""
    ts_ms: int | None
    """The log line's time, else the invocation's."""
    cost_usd: Decimal | None = None
    """Set by the `Extractor` from its price table; None for unknown models and for calls
    without a model or token counts. Never estimated."""


def api_call(
    provider: str,
    endpoint: str | None,
    model: str | None,
    status: int | None,
    duration_ms: float | None,
    tokens_in: int | None,
    tokens_out: int | None,
    rate_limit_remaining: int | None,
    error: bool,
    ts_ms: int | None,
) -> ApiCall:
    """An `ApiCall` with `ok` and `rate_limited` derived, so every rule judges alike."""
    failed = status >= 400 if status else error
    rate_limited = status == 429 or rate_limit_remaining == 0
    return ApiCall(
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
    )


def priced(call: ApiCall, cost_usd: Decimal) -> ApiCall:
    """`call` with its cost (a slice and a call: `_replace` goes through a dict, slower)."""
    return ApiCall(*call[:-1], cost_usd)


def provider_for_model(model: str) -> str:
    """`anthropic` for claude-*, `openai` for gpt-*, o1*, o3*, o4*, chatgpt-*, else `llm`."""
    name = model[:8].lower()  # the longest prefix tested; a model name can be any log text
    if name.startswith("claude-"):
        return "anthropic"
    if name.startswith(_OPENAI_PREFIXES):
        return "openai"
    return LLM_PROVIDER


def api_call_record(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """The structured logger's `api_call` record. Fields of the wrong type read as None: the
    decoder checks them, but a line built elsewhere may not have been."""
    kind = line.kind
    # `is None` first: most lines have no kind, and `None != str` is a slow rich comparison.
    if kind is None or kind != "api_call" or line.data is None:
        return None
    get = line.data.get
    model = values.text(get("model"))
    provider = values.text(get("provider"))
    if provider is None:
        provider = provider_for_model(model) if model is not None else UNKNOWN_PROVIDER
    return api_call(
        provider,
        values.text(get("endpoint")),
        model,
        values.status(get("status")),
        values.duration(get("duration_ms")),
        values.count(get("tokens_in")),
        values.count(get("tokens_out")),
        values.count(get("rate_limit_remaining")),
        line.level == "error" or bool(get("error")),
        ts_ms,
    )


def llm_usage_data(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """`{"event": "llm_usage", "model": .., "usage": {..}}` in `LogLine.data`; `provider` and
    `duration_ms` are read when present. Needs a model: usage of nothing cannot be priced."""
    data = line.data
    if data is None or data.get("event") != "llm_usage":
        return None
    model = values.text(data.get("model"))
    if model is None:
        return None
    usage = data.get("usage")
    tokens_in = tokens_out = None
    if type(usage) is dict:
        raw_in = usage.get("input_tokens")
        tokens_in = values.count(raw_in if raw_in is not None else usage.get("prompt_tokens"))
        raw_out = usage.get("output_tokens")
        tokens_out = values.count(
            raw_out if raw_out is not None else usage.get("completion_tokens")
        )
    provider = values.text(data.get("provider")) or provider_for_model(model)
    return api_call(
        provider,
        None,
        model,
        None,
        values.duration(data.get("duration_ms")),
        tokens_in,
        tokens_out,
        None,
        line.level == "error" or bool(data.get("error")),
        ts_ms,
    )
