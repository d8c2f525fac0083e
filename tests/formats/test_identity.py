"""An item's identity (its Kafka key): the same however a retry re-serialises it, different for
any change of content. Pure, no services."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.identity import KEY_HEX_CHARS, document_key, item_key, value_key
from pipeline.formats.sanitize import loads

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
)
documents = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ),
    max_size=8,
)


def shuffled(value: Any, rng: random.Random) -> Any:
    """`value` with the keys of every object in another order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=500, deadline=None)
@given(documents, st.integers(0, 2**32), st.sampled_from([None, 1, 2, 4]))
def test_key_order_whitespace_and_batching_do_not_change_the_key(
    item: dict[str, Any], seed: int, indent: int | None
) -> None:
    resent = json.dumps([{"other": 1}, shuffled(item, random.Random(seed))], indent=indent)
    [_, again] = orjson.loads(resent)
    assert item_key(again) == item_key(item)


@settings(max_examples=300, deadline=None)
@given(documents, st.text(min_size=1, max_size=8), scalars)
def test_a_change_of_content_changes_the_key(
    item: dict[str, Any], name: str, value: object
) -> None:
    changed = {**item, name: value}
    if changed != item:
        assert item_key(changed) != item_key(item)


def test_keys_are_short_readable_hex() -> None:
    key = item_key({"scriptName": "api", "eventTimestamp": 1})
    assert len(key) == KEY_HEX_CHARS
    assert key.decode("ascii") == key.decode("ascii").lower()
    int(key, 16)
    assert value_key(b"x") != value_key(b"y")


def test_an_integer_and_a_float_are_different_items() -> None:
    assert item_key({"n": 1}) != item_key({"n": 1.0})


def test_a_lone_surrogate_and_a_huge_integer_still_have_a_stable_key() -> None:
    """orjson refuses to write either; the fallback must be as canonical as the fast path."""
    [a, _] = loads(b'{"b": 1, "a": "cut \\ud83d"}')
    [b, _] = loads(b'{"a":"cut \\ud83d","b":1}')
    assert item_key(a) == item_key(b)
    huge = {"n": 2**70, "s": "x"}
    assert item_key(huge) == item_key({"s": "x", "n": 2**70}) != item_key({"n": 2**70})


def test_only_objects_have_a_document_key() -> None:
    assert document_key([1, 2]) is None
    assert document_key("item") is None
    assert document_key({"a": 1}) == item_key({"a": 1})
