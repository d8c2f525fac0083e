"""Free-text extraction rules: a regex with named groups that turns a log line into a record.

A rule is a plain callable `rule(line, ts_ms) -> ApiCall | Scan | None`; the `Extractor` tries
its rules in order and the first record returned wins, so a line yields at most one record.
`TextRule` is the configurable kind, loaded from TOML (`rules.toml` in this package documents
the format and holds the built-in rules). Each one first tests its `contains` substrings, a
C-speed scan that rejects nearly every line, and runs its regex (`re.search`) only on the rest.

A user file (`load_rules(path)`) extends the built-in rules: its rules are tried first, a rule
named like a built-in one replaces it, `enabled = false` on such a name removes it, and a
top-level `include_builtin = false` drops all built-in rules, so the file replaces them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pipeline import datafile
from pipeline.errors import SettingsError
from pipeline.formats.invocation import LogLine
from pipeline.transform.extract import endpoints
from pipeline.transform.extract.api_calls import ApiCall, api_call
from pipeline.transform.extract.endpoints import endpoint
from pipeline.transform.extract.scans import STATUSES, Scan, scan_status
from pipeline.transform.extract.values import parse_count, parse_duration

Rule = Callable[[LogLine, int | None], ApiCall | Scan | None]
"""`rule(line, ts_ms)`: the record `line` reports, or None. `ts_ms` is the line's timestamp,
or the invocation's when the line has none."""

API_CALL_FIELDS = (
    "provider",
    "endpoint",
    "method",
    "model",
    "status",
    "duration_ms",
    "tokens_in",
    "tokens_out",
    "rate_limit_remaining",
    "error",
)
"""What an `api_call` rule's groups can fill. `method` prefixes the endpoint; `error`, when it
captured text, marks a call without a status as failed."""
SCAN_FIELDS = ("repo", "status", "files", "duration_ms")
RECORDS = {"api_call": API_CALL_FIELDS, "scan": SCAN_FIELDS}
_RULE_KEYS = ("name", "record", "pattern", "contains", "provider", "fields", "normalize", "enabled")
_FILE_KEYS = ("rule", "include_builtin")
_ABSENT = -1
"""Slot of a field no group fills: the None appended to the match's groups."""


@dataclass(frozen=True, slots=True)
class TextRule:
    name: str
    pattern: str
    """A Python regex, searched anywhere in `LogLine.text` (anchor with `^` to match at the
    start); its named groups fill the record's fields of the same name."""
    record: str = "api_call"
    contains: tuple[str, ...] = ()
    """The regex runs only on lines containing one of these (case-sensitive); empty: always."""
    provider: str | None = None
    """A fixed provider. Without it: a `provider` group, else inferred from a `model` group."""
    fields: tuple[tuple[str, str], ...] = ()
    """`(field, group)` pairs for groups not named after their field."""
    normalize: str = "ids"
    """How an endpoint path becomes a template: one of `endpoints.STYLES`."""
    apply: Rule = field(init=False, repr=False, compare=False)
    """The rule as a plain function (a closure over this rule's compiled parts): what an
    `Extractor` runs. Calling the `TextRule` itself does the same, one indirection slower."""

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name:
            raise SettingsError("rule name", "a non-empty string", self.name)
        allowed = RECORDS.get(self.record) if type(self.record) is str else None
        if allowed is None:
            self._fail("record", f"one of {', '.join(RECORDS)}", self.record)
        regex = self._compile()
        slots = self._slots_for(regex, allowed)
        # Read as objects: the TOML list is not yet known to hold strings, and a compiled
        # build checks the annotation's element type as it iterates.
        contains: tuple[object, ...] = self.contains
        if not (type(contains) is tuple and all(type(s) is str and s for s in contains)):
            self._fail("contains", "a non-empty string or a list of them", self.contains)
        if self.normalize not in endpoints.STYLES:
            self._fail("normalize", f"one of {', '.join(endpoints.STYLES)}", self.normalize)
        if self.record == "api_call":
            self._check_api_call(slots)
            apply = _api_call_rule(self, regex, slots)
        elif self.provider is not None:
            self._fail("provider", "no provider: scan rules have none", self.provider)
        elif slots[SCAN_FIELDS.index("status")] == _ABSENT:
            self._fail("pattern", f"a group for status ({', '.join(sorted(STATUSES))})", None)
        else:
            apply = _scan_rule(self, regex, slots)
        object.__setattr__(self, "apply", apply)

    def __call__(self, line: LogLine, ts_ms: int | None) -> ApiCall | Scan | None:
        return self.apply(line, ts_ms)

    def _compile(self) -> re.Pattern[str]:
        if type(self.pattern) is not str or not self.pattern:
            self._fail("pattern", "a non-empty regular expression", self.pattern)
        try:
            return re.compile(self.pattern)
        except re.error as error:
            self._fail("pattern", f"a Python regular expression ({error})", self.pattern)

    def _slots_for(self, regex: re.Pattern[str], allowed: tuple[str, ...]) -> tuple[int, ...]:
        """Per field, the index of its group in `match.groups()`, or _ABSENT."""
        if not (type(self.fields) is tuple and all(_is_pair(p) for p in self.fields)):
            self._fail("fields", "a table of field = group names", self.fields)
        renamed = dict(self.fields)
        for name, group in renamed.items():
            if name not in allowed:
                self._fail("fields", f"fields of {self.record}: {', '.join(allowed)}", name)
            if group not in regex.groupindex:
                self._fail(f"fields.{name}", "the name of a group in pattern", group)
        groups = {name: renamed.get(name, name) for name in allowed}
        used = set(groups.values())
        for group in regex.groupindex:
            if group not in used:
                what = f"a field of {self.record} ({', '.join(allowed)}) or mapped in fields"
                self._fail("pattern", what, f"group {group}")
        return tuple(regex.groupindex.get(groups[name], 0) - 1 for name in allowed)

    def _check_api_call(self, slots: tuple[int, ...]) -> None:
        has = dict(zip(API_CALL_FIELDS, (slot != _ABSENT for slot in slots), strict=True))
        if self.provider is not None and (type(self.provider) is not str or not self.provider):
            self._fail("provider", "a non-empty string", self.provider)
        if self.provider is not None and has["provider"]:
            self._fail("provider", "either a fixed provider or a provider group", "both")
        if self.provider is None and not has["provider"] and not has["model"]:
            self._fail("provider", "a fixed provider, or a provider or model group", None)
        if has["method"] and not has["endpoint"]:
            self._fail("pattern", "an endpoint group along with the method group", None)

    def _fail(self, key: str, expected: str, got: object) -> NoReturn:
        raise SettingsError(f"rule {self.name!r}: {key}", expected, got)


def _is_pair(item: object) -> bool:
    return (
        type(item) is tuple and len(item) == 2 and all(type(part) is str and part for part in item)
    )


# The two closures below are the hot path: every log line meets every text rule. So the
# substring precheck comes first and is one `in` test for a rule with one `contains` (the
# empty `first` of a rule without any is in every text); match groups are read from one tuple
# with a None appended, so an absent field (slot -1) needs no branch; and every name the body
# uses is a local of the closure, not an attribute of the rule.


def _api_call_rule(rule: TextRule, regex: re.Pattern[str], slots: tuple[int, ...]) -> Rule:
    first, others = (rule.contains or ("",))[0], rule.contains[1:]
    search, fixed_provider, style = regex.search, rule.provider, rule.normalize
    provider_at, endpoint_at, method_at, model_at, status_at, *rest = slots
    duration_at, tokens_in_at, tokens_out_at, remaining_at, error_at = rest

    def api_call_rule(line: LogLine, ts_ms: int | None) -> ApiCall | None:
        text = line.text
        if first not in text and not (others and _any_in(others, text)):
            return None
        match = search(text)
        if match is None:
            return None
        found = (*match.groups(), None)
        path = found[endpoint_at]
        status = found[status_at]
        code = parse_count(status) if status else None
        duration = found[duration_at]
        tokens_in = found[tokens_in_at]
        tokens_out = found[tokens_out_at]
        remaining = found[remaining_at]
        return api_call(  # infers a provider from the model when none is given
            fixed_provider or found[provider_at],
            endpoint(found[method_at], path, style) if path else None,
            found[model_at] or None,
            code if code is None or code <= 999 else None,
            parse_duration(duration) if duration else None,
            parse_count(tokens_in) if tokens_in else None,
            parse_count(tokens_out) if tokens_out else None,
            parse_count(remaining) if remaining else None,
            line.level == "error" or bool(found[error_at]),
            ts_ms,
        )

    return api_call_rule


def _scan_rule(rule: TextRule, regex: re.Pattern[str], slots: tuple[int, ...]) -> Rule:
    first, others = (rule.contains or ("",))[0], rule.contains[1:]
    search = regex.search
    repo_at, status_at, files_at, duration_at = slots

    def scan_rule(line: LogLine, ts_ms: int | None) -> Scan | None:
        text = line.text
        if first not in text and not (others and _any_in(others, text)):
            return None
        match = search(text)
        if match is None:
            return None
        found = (*match.groups(), None)
        status = scan_status(found[status_at])
        if status is None:
            return None
        files = found[files_at]
        duration = found[duration_at]
        return Scan(
            found[repo_at] or None,
            status,
            parse_count(files) if files else None,
            parse_duration(duration) if duration else None,
            ts_ms,
        )

    return scan_rule


def _any_in(needles: tuple[str, ...], text: str) -> bool:
    return any(needle in text for needle in needles)


def load_rules(path: datafile.StrPath | None = None) -> tuple[TextRule, ...]:
    """The built-in rules, extended (or replaced) by the file at `path` as the module says."""
    builtin, _, _ = parse_rules(*datafile.packaged_from("pipeline.transform.extract", "rules.toml"))
    if path is None:
        return builtin
    rules, mentioned, include_builtin = parse_rules(*datafile.user(path))
    if not include_builtin:
        return rules
    return (*rules, *(rule for rule in builtin if rule.name not in mentioned))


def parse_rules(
    label: str, document: dict[str, Any]
) -> tuple[tuple[TextRule, ...], frozenset[str], bool]:
    """`(enabled rules, every rule name the document mentions, include_builtin)`."""
    datafile.check_keys(label, document, _FILE_KEYS)
    include_builtin = document.get("include_builtin", True)
    if type(include_builtin) is not bool:
        raise SettingsError(f"{label}: include_builtin", "true or false", include_builtin)
    tables = document.get("rule", [])
    if type(tables) is not list or not all(type(t) is dict for t in tables):
        raise SettingsError(f"{label}: rule", "an array of tables ([[rule]])", tables)
    rules: list[TextRule] = []
    names: set[str] = set()
    for position, table in enumerate(tables, 1):
        name = table.get("name")
        where = f"{label}: rule {name!r}" if type(name) is str else f"{label}: rule #{position}"
        datafile.check_keys(where, table, _RULE_KEYS)
        if type(name) is not str or not name:
            raise SettingsError(f"{where}: name", "a non-empty string", name)
        if name in names:
            raise SettingsError(f"{where}: name", "a name no other rule of the file has", name)
        names.add(name)
        enabled = table.get("enabled", True)
        if type(enabled) is not bool:
            raise SettingsError(f"{where}: enabled", "true or false", enabled)
        if enabled:
            try:
                rules.append(_rule(table))
            except SettingsError as error:
                raise SettingsError(f"{label}: {error.name}", error.expected, error.got) from None
    return tuple(rules), frozenset(names), include_builtin


def _rule(table: dict[str, Any]) -> TextRule:
    """A `TextRule` from one `[[rule]]` table: TOML's shapes turned into the dataclass's."""
    contains = table.get("contains", ())
    if type(contains) is str:
        contains = (contains,)
    elif type(contains) is list:
        contains = tuple(contains)
    pattern: Any = table.get("pattern")  # TextRule says what is wrong with it, if anything
    fields = table.get("fields", {})
    if type(fields) is dict:
        fields = tuple(fields.items())
    return TextRule(
        name=table["name"],
        pattern=pattern,
        record=table.get("record", "api_call"),
        contains=contains,
        provider=table.get("provider"),
        fields=fields,
        normalize=table.get("normalize", "ids"),
    )
