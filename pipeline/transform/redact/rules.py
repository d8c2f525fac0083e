"""The redaction rules: the `Rule` type, and the rules of `rules.toml`, read and checked once,
when this module is imported (`RULES`, in file order).

The rules are data: `rules.toml`, shipped in this package, holds one entry per kind of
credential (its documented shape, the trigger words that gate it, a regex and test examples); a
malformed entry is a `SettingsError` naming the rule. A rule is a plain callable
`rule(text, counts) -> text` with a `name`: it replaces each secret it finds with
`[REDACTED:<name>]` and keeps the context around it (`Bearer [REDACTED:bearer]`,
`https://user:[REDACTED:userinfo]@host`, `?token=[REDACTED:query]&page=2`), adding one to
`counts[name]` per replacement. The names (`NAMES`) are the `rule` label of
`tailpipe_redactions_total`, a set fixed by the file. Patterns are written to stay linear on
hostile input (possessive quantifiers, lookbehinds that anchor tokens and names at word starts,
bounded retries).

What the rules are, apart from when they run (`triggers`) and where (`engine`): adding a kind of
credential touches `rules.toml` and, for a new `check`, this module only.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pipeline.errors import SettingsError
from pipeline.transform.redact.names import NAME_TRIGGERS, is_secret_name

MARKER = "[REDACTED:{}]"
_MARKER = r"\[REDACTED(?::[a-z_]+)?\]"
is_marker = re.compile(_MARKER).fullmatch
"""Whether a whole value is a marker: redacted already, so never redacted again."""

Counts = Counter[str]
Check = Callable[[re.Match[str], str], bool]
"""Vets one match, given the secret it would replace: False keeps the text as it is."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of secret. `pattern` has a group named `secret` (or `secret2`, `secret3`, ... for
    alternatives): that span is replaced, the rest of the match is kept. `accept`, when given,
    vets a match (e.g. is the parameter name a secret one); a rejected match resumes scanning
    after its `name` group, so `a=password=x` still finds `password=x`. The other fields
    describe the rule (docs/events.md and the tests read them)."""

    name: str
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]
    accept: Check | None = None
    names: re.Pattern[str] | None = None
    """With a check on names: a regex whose group 1 finds, in one `findall`, every name the
    check could be asked about (and maybe more). Where none of them is a secret name, no
    match can be accepted and the pattern does not run: `input_tokens=`, `"model":` and
    `event=` each cost the pattern a match and a search after it."""
    title: str = ""
    category: str = ""
    kinds: tuple[str, ...] = ()
    shape: str = ""
    source: str = ""
    examples: tuple[tuple[str, str], ...] = ()
    """`(text, secret)` pairs: `secret` must be gone from the redacted `text`."""
    groups: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The secret groups of `pattern`, in order."""

    def __post_init__(self) -> None:
        groups = sorted((i, g) for g, i in self.pattern.groupindex.items() if _SECRET_GROUP(g))
        object.__setattr__(self, "groups", tuple(g for _, g in groups))

    def __call__(self, text: str, counts: Counts | None = None) -> str:
        names = self.names
        if names is not None and not any(map(is_secret_name, names.findall(text))):
            return text
        search = self.pattern.search
        match = search(text)
        if match is None:
            return text
        groups = self.groups
        marker = MARKER.format(self.name)
        parts: list[str] = []
        done = 0  # text[:done] is in parts
        replaced = 0
        while match is not None:
            for group in groups:
                secret = match.group(group)
                if secret is not None:
                    break
            if (
                not secret
                or is_marker(secret)
                or (self.accept is not None and not self.accept(match, secret))
            ):
                resume = match.end("name") if "name" in match.re.groupindex else -1
                match = search(text, max(resume, match.start() + 1))
                continue
            start, end = match.span(group)
            parts.append(text[done:start])
            parts.append(marker)
            done = end
            replaced += 1
            # On from the secret's end, not the match's: what closed this match (a quote, an
            # `@`) may open the next one, as it would on a second pass over the markers.
            match = search(text, max(end, match.start() + 1))
        if not replaced:
            return text
        parts.append(text[done:])
        if counts is not None:
            counts[self.name] += replaced
        return "".join(parts)


_SECRET_GROUP = re.compile(r"secret[0-9]*").fullmatch
_LITERALS = frozenset(("null", "none", "true", "false", "undefined"))


def _named_secret(match: re.Match[str], secret: str) -> bool:
    return is_secret_name(match.group("name"))


def _assignment(match: re.Match[str], secret: str) -> bool:
    """A `name = value` whose name is secret and whose value is not a JSON literal."""
    return secret.lower() not in _LITERALS and is_secret_name(match.group("name"))


def _basic_credentials(match: re.Match[str], secret: str) -> bool:
    """Base64 of `user:password` (RFC 7617): printable UTF-8 with a colon. Prose after the word
    Basic (`Basic authentication`) decodes to bytes that are not."""
    data = secret.rstrip("=")
    try:
        decoded = base64.b64decode(data + "=" * (-len(data) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


CHECKS: dict[str, Check] = {
    "secret_name": _named_secret,
    "assignment": _assignment,
    "basic_credentials": _basic_credentials,
}
"""The `check` values of the rules file."""
_NAME_CHECKS = frozenset(("secret_name", "assignment"))
CATEGORIES = (
    "source", "cloud", "payment", "chat", "email", "registry", "llm", "monitoring", "devtools",
    "keys", "url", "authorization", "context",
)  # fmt: skip
FIELD = "field"
"""Counter name for values replaced because their key names a secret (`redact_json`)."""
HEADER = "header"
"""Counter name for values of secret headers (`redact_headers`)."""
RULES_FILE = "rules.toml"
_RULE_KEYS = (
    "name", "title", "category", "kinds", "shape", "source", "triggers", "pattern", "check",
    "names", "examples",
)  # fmt: skip
_RULE_NAME = re.compile(r"[a-z][a-z_]*").fullmatch
_TRIGGER = re.compile(r"[ !#-\[\]-~]+").fullmatch
"""Printable ASCII without a double quote or a backslash: JSON text holds a trigger as it is
(the transform's fast path searches serialized JSON)."""


def parse_rules(label: str, document: dict[str, Any]) -> tuple[Rule, ...]:
    """The rules of a rules document (`label` names it in errors), checked: any problem is a
    `SettingsError` naming the rule and the key."""
    for key in document:
        if key != "rule":
            raise SettingsError(f"{label}: {key}", "only [[rule]] tables", key)
    tables = document.get("rule")
    if type(tables) is not list or not tables or not all(type(t) is dict for t in tables):
        raise SettingsError(f"{label}: rule", "an array of tables ([[rule]])", tables)
    rules: list[Rule] = []
    names: set[str] = {HEADER, FIELD}
    for position, table in enumerate(tables, 1):
        name = table.get("name")
        where = f"{label}: rule {name!r}" if type(name) is str else f"{label}: rule #{position}"
        if type(name) is not str or not _RULE_NAME(name):
            raise SettingsError(f"{where}: name", "a name of [a-z_] (the marker's)", name)
        if name in names:
            raise SettingsError(f"{where}: name", "a name no other rule has", name)
        names.add(name)
        rules.append(_rule(where, table))
    return tuple(rules)


def _rule(where: str, table: dict[str, Any]) -> Rule:
    def fail(key: str, expected: str, got: object) -> SettingsError:
        return SettingsError(f"{where}: {key}", expected, got)

    for key in table:
        if key not in _RULE_KEYS:
            raise fail(key, f"one of the keys {', '.join(_RULE_KEYS)}", key)
    for key in ("title", "shape"):
        if type(table.get(key)) is not str or not table[key]:
            raise fail(key, "a non-empty string", table.get(key))
    if table.get("category") not in CATEGORIES:
        raise fail("category", f"one of {', '.join(CATEGORIES)}", table.get("category"))
    source = table.get("source")
    if type(source) is not str or not source.startswith("https://"):
        raise fail("source", "the https:// URL documenting the format", source)
    kinds = table.get("kinds")
    if type(kinds) is not list or not kinds or not all(type(k) is str and k for k in kinds):
        raise fail("kinds", "a non-empty list of non-empty strings", kinds)
    check = table.get("check")
    if check is not None and check not in CHECKS:
        raise fail("check", f"one of {', '.join(CHECKS)}", check)
    triggers = table.get("triggers")
    if type(triggers) is not list or not all(
        type(t) is str and _TRIGGER(t) and t == t.lower() for t in triggers
    ):
        what = 'a list of lower-case substrings (printable ASCII, no " or \\)'
        raise fail("triggers", what, triggers)
    if check in _NAME_CHECKS:
        triggers = [*triggers, *NAME_TRIGGERS]
    if not triggers:
        raise fail("triggers", "at least one trigger (or a check on names)", triggers)
    raw = table.get("pattern")
    if type(raw) is not str or not raw:
        raise fail("pattern", "a non-empty regular expression", raw)
    try:
        pattern = re.compile(raw)
    except re.error as error:
        raise fail("pattern", f"a Python regular expression ({error})", raw) from None
    if not any(_SECRET_GROUP(group) for group in pattern.groupindex):
        raise fail("pattern", "a group named secret (or secret2, ...)", raw)
    if check in _NAME_CHECKS and "name" not in pattern.groupindex:
        raise fail("pattern", f"a group named name, which check {check!r} judges", raw)
    names = _names(table.get("names"), check, fail)
    examples = table.get("examples")
    if type(examples) is not list or not examples:
        raise fail("examples", "a non-empty list of examples", examples)
    pairs: list[tuple[str, str]] = []
    for example in examples:
        if type(example) is dict and set(example) == {"text", "secret"}:
            text, secret = example["text"], example["secret"]
        else:
            text = secret = example
        if not (type(text) is str and type(secret) is str and secret and secret in text):
            raise fail("examples", "strings, or tables {text, secret} with secret in text", example)
        lowered = text.lower()
        if not any(trigger in lowered for trigger in triggers):
            raise fail("examples", "texts holding one of the triggers", text)
        pairs.append((text, secret))
    return Rule(
        name=table["name"],
        pattern=pattern,
        triggers=tuple(dict.fromkeys(triggers)),
        accept=CHECKS[check] if check is not None else None,
        names=names,
        title=table["title"],
        category=table["category"],
        kinds=tuple(kinds),
        shape=table["shape"],
        source=source,
        examples=tuple(pairs),
    )


def _names(
    raw: object, check: str | None, fail: Callable[[str, str, object], SettingsError]
) -> re.Pattern[str] | None:
    if raw is None:
        return None
    if check not in _NAME_CHECKS:
        raise fail("names", "no names: only a rule with a check on names has them", raw)
    try:
        names = re.compile(raw) if type(raw) is str and raw else None
    except re.error:
        names = None
    if names is None or names.groups != 1:
        raise fail("names", "a Python regular expression with one group, the name", raw)
    return names


def load_rules() -> tuple[Rule, ...]:
    """The rules of the packaged `rules.toml`, in file order."""
    label = f"pipeline/transform/redact/{RULES_FILE}"
    raw = (
        resources.files("pipeline.transform.redact")
        .joinpath(RULES_FILE)
        .read_text(encoding="utf-8")
    )
    try:
        document = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(label, "valid TOML", str(error)) from None
    return parse_rules(label, document)


RULES: tuple[Rule, ...] = load_rules()
"""Applied in this order: the specific token shapes first, so a GitHub token in `?token=` is
counted as `github`; the structural rules then skip values that are already markers."""
BY_NAME: dict[str, Rule] = {rule.name: rule for rule in RULES}
NAMES = (*(rule.name for rule in RULES), HEADER, FIELD)
