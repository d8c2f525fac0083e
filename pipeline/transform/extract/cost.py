"""What an LLM call cost: tokens times the model's price, in exact decimal dollars.

Prices are USD per million tokens, per model: `input` and `output`, and optionally
`cache_read`, `cache_write` and `cache_write_1h` for prompt-cache tokens (`prices.toml` in this
package ships a few current Anthropic and OpenAI models; `load_prices(path)` merges a user's
file over them, entry by entry). A model is priced by its exact name, else, when it is a dated
variant of a listed model (the listed name followed by `-YYYYMMDD`, `-YYYY-MM-DD`, `@YYYYMMDD`
or `-latest`, as in `claude-sonnet-4-5-20250929`), by that model: the longest listed prefix
the name has, accepted only when what follows it is such a suffix. Anything else is unknown
and gets no cost: `gpt-4o-audio-preview` starts with `gpt-4o` but is another model at another
price, and a wrong number in a cost report is worse than a missing one.

A call's tokens are disjoint kinds (see `api_calls`): uncached input at `input`, cache reads at
`cache_read`, cache writes at `cache_write` (Anthropic's default five-minute cache) or, those
written for one hour, at `cache_write_1h`, and output at `output`. A call with tokens of a kind
its model has no price for (more than 0 of them) gets no cost: it is counted unpriced, never
priced at another kind's rate. Batch discounts and long-context tiers are not modelled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from pipeline import datafile
from pipeline.errors import SettingsError

# Exact for any count this pipeline keeps (< 10**18) times any price of up to 12 digits; a
# private context, so that a caller changing the thread's decimal context changes nothing here.
_CONTEXT = Context(prec=40)
_MAX_PRICE = Decimal(1_000_000)
_MAX_DIGITS = 12
_DATED = re.compile(r"(?:-\d{8}|-\d{4}-\d{2}-\d{2}|@\d{8}|-latest)$").search
_FILE_KEYS = ("models",)
_PRICE_KEYS = ("input", "output")
_CACHE_KEYS = ("cache_read", "cache_write", "cache_write_1h")
"""Optional: a model without them is priced only for calls that used no prompt cache."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens; a cache price of None: the model has no price for that kind."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    """Tokens written to the (five-minute) prompt cache."""
    cache_write_1h: Decimal | None = None
    """Tokens written to Anthropic's one-hour prompt cache."""

    def __post_init__(self) -> None:
        for name in (*_PRICE_KEYS, *_CACHE_KEYS):
            value = getattr(self, name)
            if value is None and name in _CACHE_KEYS:
                continue
            if not (
                type(value) is Decimal
                and value.is_finite()
                and 0 <= value <= _MAX_PRICE
                and len(value.as_tuple().digits) <= _MAX_DIGITS
            ):
                what = f"a Decimal of USD per million tokens, 0 to {_MAX_PRICE}"
                raise SettingsError(f"price {name}", what, value)


@dataclass(frozen=True, slots=True)
class Prices:
    models: Mapping[str, Price] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for model, price in self.models.items():
            if type(model) is not str or not model or type(price) is not Price:
                raise SettingsError("prices", "model names mapped to Price values", model)
        # A read-only copy: the table must not change under an Extractor that holds it.
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))

    def price(self, model: str) -> Price | None:
        """The price of `model`: exact name, else a dated variant's; None when unknown."""
        price = self.models.get(model)
        if price is not None:
            return price
        # The last character rules out most names before the regex runs.
        if not model or not (model[-1].isdigit() or model.endswith("latest")):
            return None
        dated = _DATED(model)
        return self.models.get(model[: dated.start()]) if dated else None

    def cost(
        self,
        model: str,
        tokens_in: int | None,
        tokens_out: int | None,
        cache_read: int | None = None,
        cache_write: int | None = None,
        cache_write_1h: int | None = None,
    ) -> Decimal | None:
        """USD for the tokens, exact; a missing count is no tokens of that kind.
        `cache_write_1h` is the part of `cache_write` written for one hour. None when the model
        has no price, when no count is known, or when there are cache tokens of a kind the
        model has no price for."""
        if tokens_in is None and tokens_out is None and not cache_read and not cache_write:
            return None
        price = self.price(model)
        if price is None:
            return None
        ctx = _CONTEXT
        total = ctx.add(
            ctx.multiply(price.input, tokens_in or 0), ctx.multiply(price.output, tokens_out or 0)
        )
        if cache_read:
            if price.cache_read is None:
                return None
            total = ctx.add(total, ctx.multiply(price.cache_read, cache_read))
        if cache_write or cache_write_1h:
            hour = cache_write_1h or 0
            minutes = (cache_write or 0) - hour
            if minutes < 0:
                return None  # more one-hour writes than writes: counts that contradict
            if minutes:
                if price.cache_write is None:
                    return None
                total = ctx.add(total, ctx.multiply(price.cache_write, minutes))
            if hour:
                if price.cache_write_1h is None:
                    return None
                total = ctx.add(total, ctx.multiply(price.cache_write_1h, hour))
        return total.scaleb(-6, ctx)  # per million: an exponent shift, no rounding


def load_prices(path: datafile.StrPath | None = None) -> Prices:
    """The packaged price table, with the file at `path` (same format) merged over it."""
    table = parse_prices(*datafile.packaged_from("pipeline.transform.extract", "prices.toml"))
    if path is not None:
        table |= parse_prices(*datafile.user(path))
    return Prices(table)


def parse_prices(label: str, document: dict[str, Any]) -> dict[str, Price]:
    """`{model: Price}` of a prices document: `[models]` with `"name" = {input=.., output=..}`,
    and optionally `cache_read`, `cache_write`, `cache_write_1h` in the same table."""
    datafile.check_keys(label, document, _FILE_KEYS)
    models = document.get("models", {})
    if type(models) is not dict:
        raise SettingsError(f"{label}: models", "a table of model prices", models)
    table: dict[str, Price] = {}
    for model, entry in models.items():
        where = f"{label}: models.{model!r}"
        if type(entry) is not dict:
            raise SettingsError(where, "a table {input = .., output = ..}", entry)
        datafile.check_keys(where, entry, (*_PRICE_KEYS, *_CACHE_KEYS))
        amounts = []
        for key in _PRICE_KEYS:
            if key not in entry:
                raise SettingsError(f"{where}.{key}", "USD per million tokens", None)
            amounts.append(_decimal(entry[key], f"{where}.{key}"))
        cache = {key: _decimal(entry[key], f"{where}.{key}") for key in _CACHE_KEYS if key in entry}
        try:
            table[model] = Price(*amounts, **cache)
        except SettingsError as error:
            raise SettingsError(f"{where}: {error.name}", error.expected, error.got) from None
    return table


def _decimal(value: Any, where: str) -> Decimal:
    """A TOML amount as a Decimal. Strings are exact; a float goes through its shortest repr,
    so `0.15` is Decimal("0.15"), not the binary fraction nearest to it."""
    try:
        if type(value) is str:
            return Decimal(value.strip())
        if type(value) is int:
            return Decimal(value)
        if type(value) is float:
            return Decimal(repr(value))
    except InvalidOperation:
        pass
    raise SettingsError(where, "USD per million tokens: a number or a decimal string", value)
