"""The composition: an invocation's logs -> the API calls and scans they report.

`Extractor` holds a list of rules (plain callables, see `rules.Rule`) and a price table, and
walks an invocation's log lines once, trying the rules in order on each line; the first record
a rule returns is kept and ends the line. LLM calls get their cost from the price table.

The default rules put the exact, structured sources first (typed logger records, then
`llm_usage` JSON) and the free-text rules after them, so a typed record is never parsed twice.
Compose your own list (any callables of the `Rule` shape) to add or reorder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.extract import datafile
from pipeline.extract.api_calls import ApiCall, api_call_record, llm_usage_data, priced
from pipeline.extract.cost import Prices, load_prices
from pipeline.extract.rules import Rule, load_rules
from pipeline.extract.scans import Scan, scan_record
from pipeline.records import Invocation

STRUCTURED_RULES: tuple[Rule, ...] = (api_call_record, scan_record, llm_usage_data)


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
        """`STRUCTURED_RULES` followed by `text_rules`."""
        return cls((*STRUCTURED_RULES, *text_rules), prices)

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
                        usd = cost(model, found.tokens_in, found.tokens_out)
                        if usd is not None:
                            found = priced(found, usd)
                    calls.append(found)
                elif type(found) is Scan:
                    scans.append(found)
                break
        return Extracted(calls, scans)
