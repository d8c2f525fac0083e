"""The trigger scan: which rules a text needs, found in one pass over it.

Redaction runs on every log line. Each rule lists lower-case trigger substrings, one of which any
text it can change contains. All triggers of all rules are compiled into one regex that
`first_trigger` searches once in the lower-cased text: a line with no trigger costs one `lower()`
and that one scan, however many rules there are. The scan does not stop at every character: each
trigger is looked for at one of its characters, picked so that those characters are few and rare
in logs (`token` at its `k`, `npm_` at its `_`; `_anchors`). A text with a trigger is scanned
once more to learn which triggers it holds (`selected`), and only their rules run, in file order
(`plan`).

`rules_for(text)` answers the whole question, which rules a text needs, in one call: where the
native core is installed (`pipeline.native`, which every wheel and `make` install builds) one
walk of an Aho-Corasick automaton over the text's bytes, with no lower-cased copy; else, and for
the rare text the automaton leaves undecided, the two regexes above. Both give the same mask:
`tests/transform/test_native_triggers.py` holds them to it.

Built from `RULES` when this module is imported. A room of its own: it is about speed only, a
compiler from trigger words to two regexes, a table and an automaton. It only skips the rules
that could not change a text, so what the rules mean never depends on it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pipeline.native import load_triggers
from pipeline.transform.redact.rules import RULES, Rule

_FREQUENCY = {
    **dict.fromkeys("0123456789", 12), " ": 93, '"': 62, ":": 23, "/": 11, "-": 9, ".": 8,
    "_": 6, "=": 3, "e": 82, "t": 57, "s": 51, "a": 48, "o": 43, "i": 40, "r": 37, "n": 37,
    "l": 30, "c": 29, "d": 26, "p": 25, "m": 23, "u": 20, "h": 16, "f": 12, "g": 11, "b": 8,
    "y": 7, "v": 7, "x": 7, "w": 6, "k": 6, "j": 3, "q": 3, "z": 2,
}  # fmt: skip
"""Characters per thousand in lower-cased log text (messages, URLs, JSON; measured on the
synthetic stream and the docs); others count as 0.5."""


def _frequency(c: str) -> float:
    return _FREQUENCY.get(c, 0.5)


def _anchors(triggers: tuple[str, ...]) -> dict[str, int]:
    """Where the scan looks for each trigger: the index of one of its characters, chosen so
    that the characters the scan stops at are few and rare. Every trigger must hold one of
    them (a hitting set): greedily the character that covers most triggers per frequency,
    then any that became redundant are dropped, most frequent first. Each trigger is then
    looked for at its rarest character in the set."""
    chosen: set[str] = set()
    left = set(triggers)
    while left:
        chars = sorted({c for t in left for c in t})
        best = max(chars, key=lambda c: (sum(c in t for t in left) / _frequency(c), -_frequency(c)))
        chosen.add(best)
        left = {t for t in left if best not in t}
    for c in sorted(chosen, key=_frequency, reverse=True):
        if all(any(d in t for d in chosen - {c}) for t in triggers):
            chosen.discard(c)
    return {
        t: min((i for i, c in enumerate(t) if c in chosen), key=lambda i: (_frequency(t[i]), i))
        for t in triggers
    }


def _scan_source(anchor: dict[str, int], report: bool) -> tuple[str, list[str]]:
    """One regex finding every trigger, and (with `report`) the trigger each capture group
    names, in the order the regex tries them.

    For each character that anchors some trigger: `c(?=...)`, a lookahead over a trie of what
    follows `c` in those triggers, each ending in a lookbehind for the whole trigger (when `c`
    is not its first character) and, with `report`, an empty group naming it. A match
    consumes only the anchor, so every anchor position is tried; the most common anchors come
    first, since at each candidate the branches are tried in order."""
    by_char: dict[str, dict[str, Any]] = {}
    for trigger, at in sorted(anchor.items()):
        node = by_char.setdefault(trigger[at], {})
        for c in trigger[at + 1 :]:
            node = node.setdefault(c, {})
        node.setdefault("", []).append(trigger)
    order: list[str] = []

    def trie(node: dict[str, Any]) -> str:
        alternatives = [re.escape(c) + trie(child) for c, child in sorted(node.items()) if c]
        # Deeper first (above), then the longer lookbehinds: the most specific trigger wins.
        for trigger in sorted(node.get("", ()), key=len, reverse=True):
            behind = "" if anchor[trigger] == 0 else f"(?<={re.escape(trigger)})"
            alternatives.append(behind + ("()" if report else ""))
            order.append(trigger)
        if len(alternatives) == 1:
            return alternatives[0]
        return f"(?:{'|'.join(alternatives)})"

    chars = sorted(by_char, key=lambda c: (-_frequency(c), c))
    return "|".join(f"{re.escape(c)}(?={trie(by_char[c])})" for c in chars), order


def _overlap(a: str, at: int, b: str, bt: int) -> tuple[bool, bool]:
    """`a` and `b` placed at one position by their anchors `at` and `bt`: whether they agree
    where they overlap (both can be found there), and whether `b` then lies within `a`
    (finding `a` finds `b`)."""
    if a[at] != b[bt]:
        return False, False
    shift = at - bt  # b[i] lies under a[i + shift]
    agree = all(a[i + shift] == b[i] for i in range(len(b)) if 0 <= i + shift < len(a))
    return agree, agree and shift >= 0 and shift + len(b) <= len(a)


def _masks() -> dict[str, int]:
    """Per trigger, the rules it selects: one bit per rule, by index in `RULES`."""
    masks: dict[str, int] = {}
    for index, rule in enumerate(RULES):
        for trigger in rule.triggers:
            masks[trigger] = masks.get(trigger, 0) | 1 << index
    return masks


def _build_scan() -> tuple[re.Pattern[str], re.Pattern[str], tuple[_Found, ...]]:
    """The search for any trigger, the scan reporting them, and per reporting group: the rules
    it selects and the other triggers to look for at its position."""
    masks = _masks()
    triggers = tuple(sorted(masks))
    anchor = _anchors(triggers)
    search, _ = _scan_source(anchor, report=False)
    scan, order = _scan_source(anchor, report=True)
    # A match reports the first trigger the regex finds at an anchor position. Another one
    # found there too either lies within it (its rules are selected with it), or is tried
    # later, so it is checked; one tried earlier would have been reported instead.
    found: list[_Found] = [(0, ())]
    for at, a in enumerate(order):
        mask = masks[a]
        check: list[tuple[str, int, int]] = []
        for later, b in enumerate(order):
            if a[anchor[a]] != b[anchor[b]]:
                continue  # found at different characters
            agree, within = _overlap(a, anchor[a], b, anchor[b])
            if within:
                mask |= masks[b]
            elif agree and later > at:
                check.append((b, anchor[b], masks[b]))
        found.append((mask, tuple(check)))
    return re.compile(search), re.compile(scan), tuple(found)


_Found = tuple[int, tuple[tuple[str, int, int], ...]]
SEARCH_RE, SCAN_RE, _FOUND = _build_scan()
first_trigger = SEARCH_RE.search
"""The first trigger of any rule in lower-cased text, or None: then no rule can change it."""
_FINDITER = SCAN_RE.finditer


def selected(lowered: str, start: int) -> int:
    """The rules (a bit mask, by index) whose triggers occur in `lowered` from `start` on."""
    found = _FOUND
    mask = 0
    for match in _FINDITER(lowered, start):
        selects, check = found[match.lastindex or 0]
        mask |= selects
        if check:
            at = match.start()
            for trigger, behind, selects in check:
                if selects & ~mask and at >= behind and lowered.startswith(trigger, at - behind):
                    mask |= selects
    return mask


def scanned_rules_for(text: str) -> int:
    """The rules `text` needs (a bit mask, by index; 0: none can change it), by the regexes."""
    lowered = text.lower()
    first = first_trigger(lowered)
    return 0 if first is None else selected(lowered, first.start())


TRIGGER_MASKS = tuple(sorted(_masks().items()))
"""`(trigger, rules mask)` pairs: what the native scans are built from."""
_NATIVE = load_triggers(TRIGGER_MASKS)
"""The native automaton's `mask` and `mask_bytes`, or None without the native core."""


def rules_for(text: str) -> int:
    """The rules `text` needs (a bit mask, by index in `RULES`; 0: none can change it)."""
    if _NATIVE is not None:
        mask = _NATIVE[0](text)
        if mask >= 0:
            return mask
    return scanned_rules_for(text)


def rules_for_utf8(data: bytes) -> int:
    """The same for UTF-8 bytes (orjson's output): scanned as they are where the native core
    is installed, so a JSON document is never decoded and lower-cased only to be searched."""
    if _NATIVE is not None:
        mask = _NATIVE[1](data)
        if mask >= 0:
            return mask
    return scanned_rules_for(data.decode())


@lru_cache(maxsize=4096)
def plan(mask: int) -> tuple[Rule, ...]:
    """The rules a set of found triggers selects, in file order."""
    return tuple(rule for index, rule in enumerate(RULES) if mask >> index & 1)
