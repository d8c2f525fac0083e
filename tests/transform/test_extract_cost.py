"""LLM cost: exact decimal arithmetic, exact then dated-variant lookup, no guesses for unknown
models, and user price files merged over the packaged table."""

from __future__ import annotations

from decimal import Decimal, localcontext
from pathlib import Path

import pytest

from pipeline.errors import SettingsError
from pipeline.transform.extract import Price, Prices, load_prices

PRICES = load_prices()


@pytest.mark.parametrize(
    ("model", "tokens_in", "tokens_out", "usd"),
    [
        # 1234 * 3 / 1e6 + 56 * 15 / 1e6 = 0.003702 + 0.00084
        ("claude-sonnet-4-5", 1234, 56, "0.004542"),
        ("claude-haiku-4-5", 8000, 2000, "0.018"),
        # 1234 * 2.50 / 1e6 + 56 * 10 / 1e6 = 0.003085 + 0.00056
        ("gpt-4o", 1234, 56, "0.003645"),
        # 0.15 and 0.60 per million: 7 * 0.15e-6 + 3 * 0.60e-6, no binary rounding anywhere
        ("gpt-4o-mini", 7, 3, "0.00000285"),
        ("gpt-4o", 1, 0, "0.0000025"),
        ("gpt-4o", 0, 0, "0"),
        ("o3", 10**18 - 1, 10**18 - 1, "9999999999999.99999"),
    ],
)
def test_cost_is_exact(model: str, tokens_in: int, tokens_out: int, usd: str) -> None:
    cost = PRICES.cost(model, tokens_in, tokens_out)
    assert cost == Decimal(usd)
    assert type(cost) is Decimal


def test_a_missing_count_is_no_tokens_of_that_kind() -> None:
    assert PRICES.cost("gpt-4o", 1000, None) == Decimal("0.0025")
    assert PRICES.cost("gpt-4o", None, 1000) == Decimal("0.01")
    assert PRICES.cost("gpt-4o", None, None) is None


def test_the_thread_decimal_context_does_not_matter() -> None:
    with localcontext() as ctx:
        ctx.prec = 3
        assert PRICES.cost("claude-sonnet-4-5", 1234, 56) == Decimal("0.004542")


@pytest.mark.parametrize(
    ("model", "listed"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # the longest prefix, not gpt-4o
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex AI spelling
    ],
)
def test_dated_variants_cost_as_the_listed_model(model: str, listed: str) -> None:
    assert PRICES.price(model) == PRICES.price(listed) is not None


def test_an_exact_entry_beats_the_variant_rule() -> None:
    # This snapshot costs twice its alias: the exact listing wins.
    assert PRICES.price("gpt-4o-2024-05-13") == Price(Decimal(5), Decimal(15))
    assert PRICES.price("gpt-4o") == Price(Decimal("2.50"), Decimal(10))


@pytest.mark.parametrize(
    "model",
    [
        "mystery-model-x",
        "gpt-4o-audio-preview",  # starts with gpt-4o, but is another model at another price
        "gpt-4o-mini-tts",
        "claude-sonnet-4-5-thinking",
        "claude-sonnet",
        "gpt-4o-20",
        "GPT-4O",
        "",
        "gpt-4o-2024-08-06-extra",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    ],
)
def test_unknown_models_get_no_cost(model: str) -> None:
    assert PRICES.price(model) is None
    assert PRICES.cost(model, 1000, 1000) is None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_prices_merge_over_the_packaged_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[models]
"gpt-4o" = { input = "2.00", output = "8" }
"mystery-model-x" = { input = 0.15, output = 1 }
""",
    )
    prices = load_prices(path)
    assert prices.price("gpt-4o") == Price(Decimal("2.00"), Decimal(8))
    # A TOML float goes through its shortest repr: exactly 0.15, not 0.1499999999999999944...
    assert prices.price("mystery-model-x") == Price(Decimal("0.15"), Decimal(1))
    assert prices.cost("mystery-model-x", 100, 0) == Decimal("0.000015")
    assert prices.price("claude-sonnet-4-5") == PRICES.price("claude-sonnet-4-5")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[models]\n"m" = { input = "3" }\n',
            "models.'m'.output: expected USD per million tokens, got None",
        ),
        (
            '[models]\n"m" = { input = "three", output = "1" }\n',
            "models.'m'.input: expected USD per million tokens: a number or a decimal string, "
            "got 'three'",
        ),
        (
            '[models]\n"m" = { input = -1, output = "1" }\n',
            "models.'m': price input: expected a Decimal of USD per million tokens, 0 to 1000000,"
            " got Decimal('-1')",
        ),
        (
            '[models]\n"m" = { input = "NaN", output = "1" }\n',
            "models.'m': price input: expected a Decimal",
        ),
        (
            '[models]\n"m" = { input = 1, output = 1, cached = 0.1 }\n',
            "models.'m': cached: expected one of the keys input, output, cache_read, "
            "cache_write, cache_write_1h, got 'cached'",
        ),
        (
            '[models]\n"m" = { input = 1, output = 1, cache_read = "-0.1" }\n',
            "models.'m': price cache_read: expected a Decimal of USD per million tokens",
        ),
        (
            '[models]\n"m" = { input = 1, output = 1, cache_write_1h = "free" }\n',
            "models.'m'.cache_write_1h: expected USD per million tokens: a number or a decimal",
        ),
        ('[models]\n"m" = 3\n', "models.'m': expected a table {input = .., output = ..}, got 3"),
        ("[prices]\n", "prices: expected one of the keys models, got 'prices'"),
    ],
)
def test_invalid_prices_file_names_the_model_and_the_problem(
    tmp_path: Path, body: str, message: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(SettingsError) as raised:
        load_prices(path)
    assert str(raised.value).startswith(f"{path}: {message}")


def test_prices_are_validated_on_creation_and_read_only() -> None:
    with pytest.raises(SettingsError, match="price output"):
        Price(Decimal(1), Decimal("Infinity"))
    with pytest.raises(SettingsError, match="price input"):
        Price(1.5, Decimal(1))  # type: ignore[arg-type]
    table = {"m": Price(Decimal(1), Decimal(2))}
    prices = Prices(table)
    table["m"] = Price(Decimal(9), Decimal(9))
    assert prices.price("m") == Price(Decimal(1), Decimal(2))
    with pytest.raises(TypeError):
        prices.models["x"] = Price(Decimal(1), Decimal(1))  # type: ignore[index]


# --- prompt-cache tokens (issue 16) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "cache_read", "cache_write", "cache_write_1h"),
    [
        # Anthropic's pricing page, "Model pricing": cache hits, 5m writes, 1h writes.
        ("claude-opus-4-5", "0.50", "6.25", "10"),
        ("claude-opus-4-1", "1.50", "18.75", "30"),
        ("claude-opus-4", "1.50", "18.75", "30"),
        ("claude-sonnet-4-5", "0.30", "3.75", "6"),
        ("claude-sonnet-4", "0.30", "3.75", "6"),
        ("claude-3-7-sonnet", "0.30", "3.75", "6"),
        ("claude-haiku-4-5", "0.10", "1.25", "2"),
        ("claude-3-5-haiku", "0.08", "1", "1.6"),
    ],
)
def test_shipped_anthropic_cache_prices(
    model: str, cache_read: str, cache_write: str, cache_write_1h: str
) -> None:
    price = PRICES.price(model)
    assert price is not None
    assert (price.cache_read, price.cache_write, price.cache_write_1h) == (
        Decimal(cache_read),
        Decimal(cache_write),
        Decimal(cache_write_1h),
    )


def test_openai_models_ship_without_cache_prices() -> None:
    """Not confirmed from OpenAI's own pricing page: left out, so such calls are unpriced."""
    for model, price in PRICES.models.items():
        if not model.startswith("claude-"):
            assert (price.cache_read, price.cache_write, price.cache_write_1h) == (None,) * 3


def test_cache_tokens_are_priced_exactly_at_their_own_rates() -> None:
    # claude-sonnet-4-5: 100 * 3 + 10 * 15 + 1000 * 0.30 + 200 * 3.75 + 50 * 6
    #   = 300 + 150 + 300 + 750 + 300, with 50 of the 250 writes for one hour.
    assert PRICES.cost("claude-sonnet-4-5", 100, 10, 1000, 250, 50) == Decimal("0.0018")
    assert PRICES.cost("claude-sonnet-4-5", None, None, 1000) == Decimal("0.0003")
    assert PRICES.cost("claude-sonnet-4-5", 0, 0, 0, 0, 0) == Decimal(0)


@pytest.mark.parametrize(
    ("cache_read", "cache_write", "cache_write_1h"),
    [(1, None, None), (None, 1, None), (None, 2, 1), (None, 1, 1)],
)
def test_cache_tokens_without_a_price_leave_the_call_unpriced(
    cache_read: int | None, cache_write: int | None, cache_write_1h: int | None
) -> None:
    prices = Prices({"m": Price(Decimal(1), Decimal(2))})
    assert prices.cost("m", 10, 10, cache_read, cache_write, cache_write_1h) is None
    assert prices.cost("m", 10, 10, 0, 0, 0) == Decimal("0.00003")


def test_only_the_missing_kind_matters() -> None:
    prices = Prices({"m": Price(Decimal(1), Decimal(2), cache_read=Decimal("0.1"))})
    assert prices.cost("m", 10, 10, 1000) == Decimal("0.00013")
    assert prices.cost("m", 10, 10, 1000, 5) is None
    hourly = Prices({"m": Price(Decimal(1), Decimal(2), cache_write=Decimal(1))})
    assert hourly.cost("m", 0, 0, None, 5, 0) == Decimal("0.000005")
    assert hourly.cost("m", 0, 0, None, 5, 1) is None  # one-hour writes, no price for them
    assert hourly.cost("m", 0, 0, None, 1, 5) is None  # more one-hour writes than writes


def test_user_cache_prices_merge_like_the_others(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[models]
"gpt-4o" = { input = "2.50", output = "10", cache_read = "1.25" }
""",
    )
    prices = load_prices(path)
    assert prices.price("gpt-4o") == Price(Decimal("2.50"), Decimal(10), cache_read=Decimal("1.25"))
    # 100 * 2.50 + 1000 * 1.25 per million; the dated snapshot is the same model.
    assert prices.cost("gpt-4o-2024-08-06", 100, 0, 1000) == Decimal("0.0015")
