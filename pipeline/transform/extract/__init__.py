"""Metrics in an invocation's logs: API calls (with LLM tokens and cost) and repository scans.

    extractor = Extractor.from_files()            # or from_files(rules=PATH, prices=PATH)
    extracted = extractor.extract(invocation)     # Extracted(api_calls=[...], scans=[...])

Sources, in the order they are tried on each log line (the first record found wins):

1. the structured logger's typed records, `LogLine.kind` `api_call` or `scan` (`api_calls`,
   `scans`);
2. LLM usage in `LogLine.data` (`llm`): an SDK's response as logged (Anthropic, OpenAI Chat
   Completions and Responses, Gemini, Workers AI), a flat `{"model", "input_tokens", ..}`, and
   tailpipe's `{"event": "llm_usage", "model": .., "usage": {..}}`;
3. a logged object of rate-limit response headers in `LogLine.data` (`rate_limits`);
4. free-text regex rules from TOML (`rules`; the packaged `rules.toml` documents the format
   and holds the built-in GitHub request, LLM-usage and scan rules);
5. rate-limit readings in free text: headers and the same words, any case (`rate_limits`).

Costs come from a price table (`cost`; the packaged `prices.toml`), cache tokens included;
a rate limit's reset from any of the formats APIs write it in (`reset_times`).
Everything is pure: the files are read when an `Extractor` is built, never while extracting,
and a malformed file is a `SettingsError` naming the file, the rule or model, and the problem.
Request durations are not extracted: they are `Invocation.wall_ms` and `cpu_ms` already.
"""

from __future__ import annotations

from pipeline.transform.extract.api_calls import ApiCall, provider_for_model
from pipeline.transform.extract.cost import Price, Prices, load_prices
from pipeline.transform.extract.extractor import LAST_RULES, STRUCTURED_RULES, Extracted, Extractor
from pipeline.transform.extract.rules import Rule, TextRule, load_rules
from pipeline.transform.extract.scans import Scan

__all__ = [
    "LAST_RULES",
    "STRUCTURED_RULES",
    "ApiCall",
    "Extracted",
    "Extractor",
    "Price",
    "Prices",
    "Rule",
    "Scan",
    "TextRule",
    "load_prices",
    "load_rules",
    "provider_for_model",
]
