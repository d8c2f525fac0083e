"""The native trigger scan (`pipeline/native/src/triggers.rs`) against its Python reference.

`triggers.rules_for` answers from the Rust automaton where the core is installed, which every
wheel and `make` install is; the regexes of `triggers` stay the reference. Both must select
exactly the rules whose triggers occur in the lower-cased text, whatever the case, the
characters around them, or the encoding of the input (a `str`, or orjson's UTF-8 bytes).
"""

from __future__ import annotations

import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import native
from pipeline.native._core import Triggers
from pipeline.transform.redact import triggers
from pipeline.transform.redact.rules import RULES

TRIGGERS = sorted({t for rule in RULES for t in rule.triggers})
_NATIVE = triggers._NATIVE


def _brute(text: str) -> int:
    lowered = text.lower()
    return sum(1 << i for i, rule in enumerate(RULES) if any(t in lowered for t in rule.triggers))


def _native_mask(text: str) -> int:
    assert _NATIVE is not None
    return _NATIVE[0](text)


def test_a_full_install_scans_natively() -> None:
    assert native.loaded(), "the native core is not built: run `make venv`"
    assert _NATIVE is not None


def test_only_two_characters_lower_to_ascii() -> None:
    """The automaton's premise (see triggers.rs): apart from U+0130 and U+212A, no non-ASCII
    character lower-cases to anything holding an ASCII character."""
    found = [
        hex(c)
        for c in range(0x80, sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF and any(ch.isascii() for ch in chr(c).lower())
    ]
    assert found == ["0x130", "0x212a"]


def _cased(text: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if flip else c for c, flip in zip(text, flips + [False] * len(text), strict=False)
    )


fragments = st.one_of(
    st.sampled_from(TRIGGERS),
    st.sampled_from(TRIGGERS).flatmap(lambda t: st.integers(0, len(t)).map(lambda i: t[i:])),
    st.sampled_from(TRIGGERS).flatmap(lambda t: st.integers(1, len(t)).map(lambda i: t[:i])),
    st.text(alphabet="abcdefgkpsxy_-.:/~$ 0123é€😀\u0130\u212a\x00", max_size=4),
    st.text(max_size=3),
)
texts = st.tuples(st.lists(fragments, max_size=8).map("".join), st.lists(st.booleans())).map(
    lambda pair: _cased(*pair)
)


@settings(max_examples=3000, deadline=None)
@given(texts)
def test_the_native_scan_selects_exactly_the_rules_whose_triggers_occur(text: str) -> None:
    expected = _brute(text)
    assert triggers.rules_for(text) == expected
    assert triggers.scanned_rules_for(text) == expected
    mask = _native_mask(text)
    assert mask in (expected, -1)
    if mask == -1:  # left to the reference, and only for these
        assert "\u0130" in text or "\u212a" in text
    assert triggers.rules_for_utf8(text.encode()) == expected


_json_text = st.text(st.characters(codec="utf-8"), max_size=8) | fragments.filter(
    lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
)


@settings(max_examples=500, deadline=None)
@given(st.recursive(_json_text | st.integers(-(2**63), 2**63 - 1) | st.none(),
       lambda c: st.lists(c, max_size=3) | st.dictionaries(_json_text, c, max_size=3)))  # fmt: skip
def test_orjson_bytes_select_what_their_text_selects(value: object) -> None:
    data = orjson.dumps(value)
    assert triggers.rules_for_utf8(data) == triggers.scanned_rules_for(data.decode())


def test_every_example_of_every_rule_selects_the_same_rules_both_ways() -> None:
    for rule in RULES:
        for text, secret in rule.examples:
            for variant in (text, text.upper(), text.swapcase(), f"é {text} 😀"):
                assert _native_mask(variant) == triggers.scanned_rules_for(variant), rule.name
            assert triggers.rules_for(text) >> RULES.index(rule) & 1, (rule.name, secret)


def test_a_lone_surrogate_is_left_to_the_reference() -> None:
    text = "token=\udcff"
    assert _native_mask(text) == -1
    assert triggers.rules_for(text) == _brute(text) != 0


@pytest.mark.parametrize(
    ("bad", "why"),
    [([("", 1)], "lower-case ASCII"), ([("Token", 1)], "lower-case ASCII"),
     ([("tökén", 1)], "lower-case ASCII"), ([("key", 1 << 127)], "at most 127 rules")],
)  # fmt: skip
def test_bad_triggers_are_refused(bad: list[tuple[str, int]], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Triggers(bad)


def test_more_rules_than_a_mask_holds_fall_back_to_the_reference() -> None:
    assert native.load_triggers([("key", 1 << 127)]) is None
    assert native.load_triggers([("key", 1 << 126)]) is not None
