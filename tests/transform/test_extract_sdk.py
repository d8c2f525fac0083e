"""LLM usage as the SDKs return it and Workers log it (issue 16, item 4): whole response
objects and their usage, as an object argument or as a JSON string, through the whole extractor
(decoded from a trace item). Only tailpipe's own `{"event": "llm_usage", ...}` form was read
before, so every SDK case here failed then.

The shapes are the SDKs' documented response types:
- Anthropic Message: anthropic-sdk-python `src/anthropic/types/usage.py` (`input_tokens`,
  `output_tokens`, `cache_creation_input_tokens`, `cache_read_input_tokens`, `cache_creation`
  with `ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`, `service_tier`), the Message
  (`id`, `type`, `role`, `model`, `content`, `stop_reason`, `usage`) of anthropic-sdk-typescript
  `src/resources/messages/messages.ts`. `input_tokens` leaves the cache tokens out.
- OpenAI Chat Completions: openai-node `src/resources/completions.ts` `CompletionUsage`
  (`prompt_tokens`, `completion_tokens`, `total_tokens`, `prompt_tokens_details.cached_tokens`,
  `completion_tokens_details.reasoning_tokens`). `prompt_tokens` includes the cached ones.
- OpenAI Responses: openai-python `src/openai/types/responses/response_usage.py`
  (`input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
  `output_tokens_details.reasoning_tokens`, `total_tokens`); input includes the cached ones.
- Gemini: js-genai `GenerateContentResponse` (`modelVersion`, `usageMetadata`) and
  `GenerateContentResponseUsageMetadata` (`promptTokenCount`, `cachedContentTokenCount`,
  `candidatesTokenCount`, `thoughtsTokenCount`, `toolUsePromptTokenCount`, `totalTokenCount`);
  the prompt count includes the cached content, and prompt, candidates, tool-use prompt and
  thoughts add up to the total.
- Workers AI: cloudflare/workerd `types/defines/ai.d.ts`, `AiTextGenerationOutput.usage` of type
  `UsageTags` (`prompt_tokens`, `completion_tokens`, `total_tokens`); the output has no model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.formats.decode import decode
from pipeline.formats.invocation import LogLine
from pipeline.transform.extract import ApiCall, Extractor, Price, Prices, load_prices
from pipeline.transform.extract.llm import llm_usage_data
from pipeline.transform.extract.rules import load_rules

TS = 1_764_374_400_000
EXTRACTOR = Extractor.from_files()

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 2051,
        "cache_read_input_tokens": 2051,
        "cache_creation": {"ephemeral_5m_input_tokens": 2051, "ephemeral_1h_input_tokens": 0},
        "server_tool_use": None,
        "service_tier": "standard",
    },
}
OPENAI_CHAT: dict[str, Any] = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}
OPENAI_RESPONSE: dict[str, Any] = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "o3-2025-04-16",
    "output": [{"type": "message", "role": "assistant", "content": []}],
    "usage": {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 500,
        "output_tokens_details": {"reasoning_tokens": 448},
        "total_tokens": 600,
    },
}
GEMINI_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {"parts": [{"text": "The sky is blue because..."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 8,
        "candidatesTokenCount": 12,
        "thoughtsTokenCount": 453,
        "totalTokenCount": 473,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
}


def extract(*message: Any, level: str = "log", extractor: Extractor = EXTRACTOR) -> list[ApiCall]:
    """The API calls of a trace item with one log line of these console arguments."""
    item = {
        "scriptName": "llm-router",
        "outcome": "ok",
        "eventTimestamp": TS,
        "event": None,
        "logs": [{"timestamp": TS + 1, "level": level, "message": list(message)}],
        "exceptions": [],
    }
    [invocation] = decode(orjson.dumps(item))
    return extractor.extract(invocation).api_calls


def one(*message: Any, **kwargs: Any) -> ApiCall:
    [call] = extract(*message, **kwargs)
    return call


def tokens(call: ApiCall) -> tuple[Any, ...]:
    return (
        call.provider,
        call.model,
        call.tokens_in,
        call.tokens_out,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.cost_usd,
    )


def as_json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


@pytest.mark.parametrize("encode", [lambda v: v, as_json], ids=["object", "json-string"])
def test_anthropic_message_with_prompt_cache(encode: Any) -> None:
    call = one("anthropic response", encode(ANTHROPIC_MESSAGE))
    # claude-sonnet-4-5: $3 input, $15 output, $0.30 cache reads, $3.75 five-minute writes:
    # 2095 * 3 + 503 * 15 + 2051 * 0.30 + 2051 * 3.75 = 22136.55 per million.
    assert tokens(call) == (
        "anthropic",
        "claude-sonnet-4-5-20250929",
        2095,
        503,
        2051,
        2051,
        Decimal("0.02213655"),
    )
    assert (call.ok, call.status, call.endpoint, call.ts_ms) == (True, None, None, TS + 1)


def test_anthropic_one_hour_cache_writes_are_priced_at_their_own_rate() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    }
    call = one({"model": "claude-haiku-4-5", "usage": usage})
    # $1 input, $5 output, $1.25 five-minute writes, $2 one-hour writes:
    # 10 + 100 + 1000 * 1.25 + 500 * 2 = 2360 per million.
    assert (call.cache_write_tokens, call.cache_write_1h_tokens) == (1500, 500)
    assert call.cost_usd == Decimal("0.00236")


def test_anthropic_flat_form() -> None:
    call = one({"model": "claude-haiku-4-5", "input_tokens": 300, "output_tokens": 30})
    assert tokens(call) == (
        "anthropic",
        "claude-haiku-4-5",
        300,
        30,
        None,
        None,
        Decimal("0.00045"),
    )


def test_anthropic_usage_beside_the_model() -> None:
    usage = {"input_tokens": 12, "output_tokens": 4, "cache_read_input_tokens": 1000}
    call = one(as_json({"model": "claude-3-5-haiku-20241022", "usage": usage}))
    # $0.80 input, $4 output, $0.08 cache reads: 9.6 + 16 + 80 = 105.6 per million.
    assert tokens(call) == ("anthropic", "claude-3-5-haiku-20241022", 12, 4, 1000, None,
                            Decimal("0.0001056"))  # fmt: skip


@pytest.mark.parametrize("encode", [lambda v: v, as_json], ids=["object", "json-string"])
def test_openai_chat_completion(encode: Any) -> None:
    call = one(encode(OPENAI_CHAT))
    # gpt-4o (the dated snapshot's alias): 1117 * 2.50 + 46 * 10 = 3252.5 per million.
    assert tokens(call) == ("openai", "gpt-4o-2024-08-06", 1117, 46, 0, None, Decimal("0.0032525"))


def test_openai_cached_prompt_tokens_are_split_out_and_left_unpriced() -> None:
    chat = {**OPENAI_CHAT, "usage": {**OPENAI_CHAT["usage"]}}
    chat["usage"]["prompt_tokens_details"] = {"cached_tokens": 1024, "audio_tokens": 0}
    call = one(chat)
    # prompt_tokens includes the cached ones; prices.toml lists no cached-input price for
    # OpenAI, so the call is unpriced rather than priced at the full input rate.
    assert tokens(call) == ("openai", "gpt-4o-2024-08-06", 93, 46, 1024, None, None)
    priced = Extractor.compose(
        [rule.apply for rule in load_rules()],
        Prices({"gpt-4o": Price(Decimal("2.50"), Decimal(10), cache_read=Decimal("1.25"))}),
    )
    # With a user's cache price: 93 * 2.50 + 46 * 10 + 1024 * 1.25 = 1972.5 per million.
    assert one(chat, extractor=priced).cost_usd == Decimal("0.0019725")


def test_openai_responses_api_with_reasoning_tokens() -> None:
    call = one("openai response", OPENAI_RESPONSE)
    # Reasoning tokens are part of output_tokens: o3 at $2 and $8, 100 * 2 + 500 * 8 = 4200.
    assert tokens(call) == ("openai", "o3-2025-04-16", 100, 500, 0, None, Decimal("0.0042"))
    cached = {**OPENAI_RESPONSE, "usage": {**OPENAI_RESPONSE["usage"]}}
    cached["usage"]["input_tokens_details"] = {"cached_tokens": 64}
    assert tokens(one(as_json(cached)))[2:5] == (36, 500, 64)


@pytest.mark.parametrize("encode", [lambda v: v, as_json], ids=["object", "json-string"])
def test_gemini_generate_content_response(encode: Any) -> None:
    call = one(encode(GEMINI_RESPONSE))
    # Thoughts are output besides the candidates; Gemini models have no price in prices.toml.
    assert tokens(call) == ("google", "gemini-2.5-flash", 8, 465, None, None, None)


def test_gemini_cached_content_and_tool_use_prompt() -> None:
    meta = {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 600,
        "toolUsePromptTokenCount": 20,
        "candidatesTokenCount": 50,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 1100,
    }
    response = {"modelVersion": "gemini-2.5-pro", "usageMetadata": meta}
    prices = Prices({"gemini-2.5-pro": Price(Decimal(1), Decimal(2), cache_read=Decimal("0.5"))})
    extractor = Extractor.compose([rule.apply for rule in load_rules()], prices)
    call = one(response, extractor=extractor)
    # 1000 - 600 uncached prompt tokens + 20 tool-use prompt tokens; 50 + 30 out.
    assert tokens(call) == ("google", "gemini-2.5-pro", 420, 80, 600, None, Decimal("0.00088"))


def test_workers_ai_output_logged_with_its_model() -> None:
    output = {
        "response": "Hello! How can I help?",
        "usage": {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37},
    }
    call = one({"model": "@cf/meta/llama-3.1-8b-instruct", **output})
    assert tokens(call) == ("workers-ai", "@cf/meta/llama-3.1-8b-instruct", 25, 12, None, None,
                            None)  # fmt: skip
    # Its OpenAI-compatible endpoint answers a chat.completion naming the model.
    compatible = {**OPENAI_CHAT, "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}
    assert one(as_json(compatible)).provider == "workers-ai"
    # Without a model there is no call: the output alone cannot be attributed.
    assert extract(output) == []


def test_a_failed_call_and_the_provider_given() -> None:
    call = one({**ANTHROPIC_MESSAGE, "provider": "bedrock"}, level="error")
    assert (call.provider, call.ok) == ("bedrock", False)


@pytest.mark.parametrize(
    "data",
    [
        {"usage": {"input_tokens": 10, "output_tokens": 5}},  # no model
        {"model": "iPhone 15", "price": 799},  # a model, no usage
        {"model": "x-200", "usage": {"quota": 3, "used": 1}},  # usage of something else
        {"type": "message_delta", "usage": {"output_tokens": 15}},  # a stream event: no model
        {"model": "c" * 201, "usage": {"input_tokens": 1, "output_tokens": 1}},  # not a name
        {"model": ["claude-haiku-4-5"], "input_tokens": 3},
        {"modelVersion": 2.5, "usageMetadata": {"promptTokenCount": 3}},
        {"model": "gemini-2.5-flash", "usageMetadata": {"cachedContentTokenCount": "x"}},
    ],
)
def test_objects_that_are_no_llm_call(data: dict[str, Any]) -> None:
    assert extract("response", data) == []


def test_a_model_with_a_nul_is_no_name() -> None:
    """The decoder repairs NUL in what it decodes; a line built elsewhere may hold one, and
    PostgreSQL text cannot."""
    data: dict[str, Any] = {"model": "claude-\x00", "usage": {"input_tokens": 1}}
    assert llm_usage_data(LogLine(TS, "log", "x", data), TS) is None


@pytest.mark.parametrize(
    "usage",
    [
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 11}},
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 5,
            "cache_creation": {"ephemeral_1h_input_tokens": 6},
        },
    ],
)
def test_counts_that_contradict_each_other_give_an_unpriced_call(usage: dict[str, Any]) -> None:
    call = one({"model": "claude-haiku-4-5", "usage": usage})
    assert (call.tokens_in, call.tokens_out, call.cache_read_tokens, call.cost_usd) == (
        None,
        None,
        None,
        None,
    )


def test_tailpipes_own_form_still_counts_a_call_without_tokens() -> None:
    call = one(as_json({"event": "llm_usage", "model": "gpt-4o"}))
    assert (call.provider, call.tokens_in, call.cost_usd) == ("openai", None, None)


def test_cache_tokens_without_a_price_make_the_call_unpriced() -> None:
    """A model listed with input and output prices only: calls that read or wrote a cache are
    unpriced, calls that did not (0 cache tokens included) are priced."""
    table = dict(load_prices().models)
    table["claude-haiku-4-5"] = Price(Decimal(1), Decimal(5))
    extractor = Extractor.compose([rule.apply for rule in load_rules()], Prices(table))
    cached = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}
    assert one({"model": "claude-haiku-4-5", "usage": cached}, extractor=extractor).cost_usd is None
    written = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 7}
    assert (
        one({"model": "claude-haiku-4-5", "usage": written}, extractor=extractor).cost_usd is None
    )
    none = {**cached, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    assert one({"model": "claude-haiku-4-5", "usage": none}, extractor=extractor).cost_usd == (
        Decimal("0.000035")
    )
