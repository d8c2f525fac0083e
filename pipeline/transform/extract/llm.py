"""LLM calls in `LogLine.data`: the usage an SDK returns, as users log it.

`console.log(response)`, `console.log("llm", response)` or `console.log(JSON.stringify(response))`
all leave the response object in `LogLine.data` (see `pipeline/formats/console.py`).
`llm_usage_data` reads, from that object:

- the model: `model`, else `modelVersion` (Gemini's GenerateContentResponse); without a model
  (or with a value that is no name, see `values.name`) there is no call to count or price;
- the token counts, in the first shape present, turned into `ApiCall`'s disjoint kinds
  (uncached input, cache reads, cache writes, output; see `api_calls`):
  - Anthropic Message: `usage.input_tokens` (without the cache tokens),
    `cache_read_input_tokens` (reads), `cache_creation_input_tokens` (writes; those of
    `cache_creation.ephemeral_1h_input_tokens` for one hour), `output_tokens`;
  - OpenAI Responses: `usage.input_tokens` (with the cached tokens),
    `input_tokens_details.cached_tokens` (reads), `output_tokens`;
  - OpenAI Chat Completions, and Workers AI (`usage` of `env.AI.run`, the same names):
    `usage.prompt_tokens` (with the cached tokens), `prompt_tokens_details.cached_tokens`
    (reads), `completion_tokens`;
  - Gemini: `usageMetadata.promptTokenCount` (with the cached tokens),
    `cachedContentTokenCount` (reads), `toolUsePromptTokenCount` (input besides the prompt),
    `candidatesTokenCount` and `thoughtsTokenCount` (output: they add up to
    `totalTokenCount`);
  - flat: `input_tokens`, `prompt_tokens`, ... at the top level
    (`{"model", "input_tokens", "output_tokens"}`), read as in `usage`.

  Reasoning and thinking tokens are part of the output counts of Anthropic and OpenAI already.
  Counts that contradict each other (more cached tokens than input) give a call without token
  counts, so it is counted, unpriced;
- `provider` (else inferred from the model), `duration_ms`, and `error` (or level `error`) for
  a failed call.

OpenTelemetry's GenAI attributes, as flat keys (what `Logger.llm_usage` sends, and what an
OTel-instrumented service logs): `gen_ai.response.model`, else `gen_ai.request.model`;
`gen_ai.usage.input_tokens` (with the cached tokens, as the conventions define it),
`gen_ai.usage.cache_read.input_tokens` and `gen_ai.usage.cache_creation.input_tokens` (both
taken out of the input), `gen_ai.usage.output_tokens`; `gen_ai.provider.name` (or the older
`gen_ai.system`) for the provider, else it is inferred from the model.

tailpipe's own form, `{"event": "llm_usage", "model": .., "usage": {..}}`, is one of these
shapes; with that event a call is counted even without token counts. Any other object needs a
token count that one of the shapes reads, so that an unrelated object with a `model` key is not
a call. Workers AI's `env.AI.run` returns `{response, usage}` without the model: log it with
the model (`console.log({model, ...result})`).
"""

from __future__ import annotations

from pipeline.formats.invocation import JSON, LogLine
from pipeline.transform.extract import values
from pipeline.transform.extract.api_calls import ApiCall, api_call

Counts = tuple[int | None, int | None, int | None, int | None, int | None]
"""(uncached input, output, cache reads, cache writes, one-hour cache writes)."""

_UNREADABLE: Counts = (None, None, None, None, None)
GEN_AI_INPUT = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_KEYS = frozenset(
    (
        "usage",
        "usageMetadata",
        "input_tokens",
        "prompt_tokens",
        "event",
        GEN_AI_INPUT,
        GEN_AI_OUTPUT,
    )
)
"""A data object without any of these keys holds no usage: one set test rejects it."""

_count = values.count


def llm_usage_data(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """The LLM call whose usage `LogLine.data` holds (see the module)."""
    data = line.data
    if data is None or USAGE_KEYS.isdisjoint(data):
        return None
    if GEN_AI_INPUT in data or GEN_AI_OUTPUT in data:
        return _gen_ai(line, data, ts_ms)
    get = data.get
    model = get("model")
    model = values.name(model) if model is not None else values.name(get("modelVersion"))
    if model is None:
        return None
    usage = get("usage")
    if type(usage) is dict:
        counts = _usage(usage)
    else:
        meta = get("usageMetadata")
        if type(meta) is dict:
            counts = _gemini(meta)
        else:
            counts = _usage(data) if "input_tokens" in data or "prompt_tokens" in data else None
    if counts is None:
        if get("event") != "llm_usage":
            return None
        counts = _UNREADABLE
    duration = get("duration_ms")
    return api_call(
        values.text(get("provider")),
        None,
        model,
        None,
        values.duration(duration) if duration is not None else None,
        counts[0],
        counts[1],
        None,
        line.level == "error" or bool(get("error")),
        ts_ms,
        counts[2],
        counts[3],
        counts[4],
    )


_GEN_AI_PROVIDERS = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "azure.ai.openai": "openai",
    "az.ai.openai": "openai",
    "aws.bedrock": None,  # the model's own provider: bedrock serves several
}
"""OpenTelemetry's provider names that are not the ones tailpipe stores (`api_calls`)."""


def _gen_ai(line: LogLine, data: dict[str, JSON], ts_ms: int | None) -> ApiCall | None:
    """A call described by OpenTelemetry GenAI attributes (see the module)."""
    get = data.get
    model = values.name(get("gen_ai.response.model")) or values.name(get("gen_ai.request.model"))
    if model is None:
        return None
    raw = get("gen_ai.provider.name")
    provider = values.name(raw if raw is not None else get("gen_ai.system"))
    if provider is not None and provider in _GEN_AI_PROVIDERS:
        provider = _GEN_AI_PROVIDERS[provider]
    total_in = _count(get(GEN_AI_INPUT))
    tokens_out = _count(get(GEN_AI_OUTPUT))
    cache_read = _count(get("gen_ai.usage.cache_read.input_tokens"))
    cache_write = _count(get("gen_ai.usage.cache_creation.input_tokens"))
    tokens_in = total_in
    if total_in is not None and (cache_read or cache_write):
        tokens_in = total_in - (cache_read or 0) - (cache_write or 0)
        if tokens_in < 0:  # counts that contradict each other: counted, unpriced
            tokens_in = tokens_out = cache_read = cache_write = None
    duration = get("duration_ms")
    return api_call(
        provider,
        None,
        model,
        None,
        values.duration(duration) if duration is not None else None,
        tokens_in,
        tokens_out,
        None,
        line.level == "error" or bool(get("error")),
        ts_ms,
        cache_read,
        cache_write,
        None,
    )


def _usage(usage: dict[str, JSON]) -> Counts | None:
    """Anthropic's, OpenAI's (both APIs) or Workers AI's usage object."""
    get = usage.get
    raw_in = get("input_tokens")
    if raw_in is not None:
        tokens_out = _count(get("output_tokens"))
        details = get("input_tokens_details")
        if type(details) is dict:  # OpenAI Responses: input includes the cached tokens
            return _inclusive(_count(raw_in), _count(details.get("cached_tokens")), tokens_out)
        return _anthropic(usage, _count(raw_in), tokens_out)
    raw_prompt = get("prompt_tokens")
    if raw_prompt is None:  # output alone: still a count (input is then unknown)
        tokens_out = _count(get("completion_tokens"))
        if tokens_out is None:
            tokens_out = _count(get("output_tokens"))
        return None if tokens_out is None else (None, tokens_out, None, None, None)
    details = get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if type(details) is dict else None
    return _inclusive(_count(raw_prompt), cached, _count(get("completion_tokens")))


def _anthropic(usage: dict[str, JSON], tokens_in: int | None, tokens_out: int | None) -> Counts:
    """Input already without the cache tokens, which are counted apart."""
    get = usage.get
    cache_read = get("cache_read_input_tokens")
    if cache_read is not None:
        cache_read = _count(cache_read)
    cache_write = get("cache_creation_input_tokens")
    if cache_write is not None:
        cache_write = _count(cache_write)
    cache_write_1h = None
    breakdown = get("cache_creation")
    if type(breakdown) is dict:
        cache_write_1h = _count(breakdown.get("ephemeral_1h_input_tokens"))
        if cache_write_1h and (cache_write is None or cache_write_1h > cache_write):
            return _UNREADABLE
    return tokens_in, tokens_out, cache_read, cache_write, cache_write_1h


def _inclusive(total_in: int | None, cached: int | None, tokens_out: int | None) -> Counts:
    """Input that includes the cache reads (OpenAI, Workers AI, Gemini): split them apart."""
    if not cached:  # None or 0: nothing to take out
        return total_in, tokens_out, cached, None, None
    if total_in is None or cached > total_in:
        return _UNREADABLE
    return total_in - cached, tokens_out, cached, None, None


def _gemini(meta: dict[str, JSON]) -> Counts | None:
    """Gemini's `usageMetadata`: the prompt includes the cached content; tool-use prompt tokens
    are input besides the prompt, thoughts output besides the candidates (the four add up to
    `totalTokenCount`)."""
    get = meta.get
    prompt = _count(get("promptTokenCount"))
    tool = _count(get("toolUsePromptTokenCount"))
    candidates = _count(get("candidatesTokenCount"))
    thoughts = _count(get("thoughtsTokenCount"))
    tokens_out = candidates if thoughts is None else (candidates or 0) + thoughts
    if prompt is None and tool is None and tokens_out is None:
        return None
    split = _inclusive(prompt, _count(get("cachedContentTokenCount")), tokens_out)
    if split is _UNREADABLE:
        return split
    tokens_in, _, cache_read, _, _ = split
    if tool:
        tokens_in = (tokens_in or 0) + tool
    return tokens_in, tokens_out, cache_read, None, None
