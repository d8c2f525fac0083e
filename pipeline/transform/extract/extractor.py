"""The composition: an invocation's logs -> the API calls and scans they report.

`Extractor` holds a list of rules (plain callables, see `rules.Rule`) and a price table, and
walks an invocation's log lines once, trying the rules in order on each line; the first record
a rule returns is kept and ends the line. LLM calls get their cost from the price table.

The default rules put the exact, structured sources first (typed logger records, then LLM usage
objects and headers objects in `LogLine.data`), the free-text rules after them, so a typed
record is never parsed twice, and last the free-text rate-limit reading, so a request line that
also shows a rate-limit header stays a request. Compose your own list (any callables of the
`Rule` shape) to add or reorder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from pipeline import datafile
from pipeline.formats.invocation import Invocation, LogLine
from pipeline.transform.extract.api_calls import ApiCall, api_call_record, priced
from pipeline.transform.extract.cost import Prices, load_prices
from pipeline.transform.extract.llm import USAGE_KEYS, llm_usage_data
from pipeline.transform.extract.rate_limits import HEADER_KEYS, rate_limit_data, rate_limit_text
from pipeline.transform.extract.rules import Rule, load_rules
from pipeline.transform.extract.scans import Scan, scan_record

_DATA_KEYS = USAGE_KEYS | HEADER_KEYS | {"headers"}


def data_records(line: LogLine, ts_ms: int | None) -> ApiCall | None:
    """`llm_usage_data`, else `rate_limit_data`, as one rule: most lines' data holds neither,
    and one set test rejects it where two rules would cost two calls and two tests."""
    data = line.data
    if data is None or _DATA_KEYS.isdisjoint(data):
        return None
    return llm_usage_data(line, ts_ms) or rate_limit_data(line, ts_ms)


STRUCTURED_RULES: tuple[Rule, ...] = (api_call_record, scan_record, data_records)
LAST_RULES: tuple[Rule, ...] = (rate_limit_text,)
"""Tried after the free-text rules of `rules.toml`."""


class Extracted(NamedTuple):
    """What one invocation's logs report. A NamedTuple for the reason `ApiCall` is one: one is
    built per invocation, and a frozen dataclass's `__init__` would cost more than a line."""

    api_calls: list[ApiCall]
    scans: list[Scan]


@dataclass(frozen=True, slots=True)
class Extractor:
    rules: tuple[Rule, ...]
    prices: Prices

    @classmethod
    def from_files(
        cls, rules: datafile.StrPath | None = None, prices: datafile.StrPath | None = None
    ) -> Extractor:
        """The structured rules and the packaged free-text rules and prices, each extended by
        the user's file when a path is given (see `load_rules` and `load_prices`)."""
        return cls.compose([rule.apply for rule in load_rules(rules)], load_prices(prices))

    @classmethod
    def compose(cls, text_rules: Iterable[Rule], prices: Prices) -> Extractor:
        """`STRUCTURED_RULES`, then `text_rules`, then `LAST_RULES`."""
        return cls((*STRUCTURED_RULES, *text_rules, *LAST_RULES), prices)

    def extract(self, invocation: Invocation) -> Extracted:
        calls: list[ApiCall] = []
        scans: list[Scan] = []
        rules = self.rules
        cost = self.prices.cost
        fallback_ts = invocation.timestamp_ms
        for line in invocation.logs:
            ts_ms = line.timestamp_ms
            if ts_ms is None:
                ts_ms = fallback_ts
            for rule in rules:
                found = rule(line, ts_ms)
                if found is None:
                    continue
                if type(found) is ApiCall:
                    model = found.model
                    if model is not None:
                        usd = cost(
                            model,
                            found.tokens_in,
                            found.tokens_out,
                            found.cache_read_tokens,
                            found.cache_write_tokens,
                            found.cache_write_1h_tokens,
                        )
                        if usd is not None:
                            found = priced(found, usd)
                    calls.append(found)
                elif type(found) is Scan:
                    scans.append(found)
                break
        return Extracted(calls, scans)
