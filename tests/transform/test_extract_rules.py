"""Free-text rules: each built-in rule on the lines it must read and the near-misses it must
not; user rules files that extend, replace or disable; and the errors a bad file gives."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import SettingsError
from pipeline.formats.invocation import LogLine
from pipeline.transform.extract import ApiCall, Scan, TextRule, load_rules

TS = 1_700_000_000_000
BUILTIN = {rule.name: rule for rule in load_rules()}


def run(name: str, text: str, level: str = "log") -> ApiCall | Scan | None:
    return BUILTIN[name].apply(LogLine(TS, level, text), TS)


def call(**fields: Any) -> ApiCall:
    """An ApiCall with defaults for the fields a case does not mention."""
    base: dict[str, Any] = {
        "provider": "github",
        "endpoint": None,
        "model": None,
        "status": None,
        "duration_ms": None,
        "tokens_in": None,
        "tokens_out": None,
        "rate_limit_remaining": None,
        "ok": True,
        "rate_limited": False,
        "ts_ms": TS,
    }
    return ApiCall(**(base | fields))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET /repos/acme/api 200 in 123ms",
            call(endpoint="GET /repos/{owner}/{repo}", status=200, duration_ms=123),
        ),
        (
            "GET /repos/octo/cli 404 in 20ms",
            call(endpoint="GET /repos/{owner}/{repo}", status=404, duration_ms=20, ok=False),
        ),
        (
            "GET /repos/acme/web 429 in 900ms",
            call(
                endpoint="GET /repos/{owner}/{repo}",
                status=429,
                duration_ms=900,
                ok=False,
                rate_limited=True,
            ),
        ),
        (
            "POST https://api.github.com/repos/acme/api/issues/17/comments?per_page=100 201 in "
            "45.5ms",
            call(
                endpoint="POST /repos/{owner}/{repo}/issues/{id}/comments",
                status=201,
                duration_ms=45.5,
            ),
        ),
        (
            "GET /repos/acme/api/contents/src/app/main.py 200 in 7 ms (cached)",
            call(endpoint="GET /repos/{owner}/{repo}/contents/{path}", status=200, duration_ms=7),
        ),
        (
            "GET /repos/acme/api/commits/9fceb02d0ae598e95dc970b74767f19372d61af8 200 in 3ms",
            call(endpoint="GET /repos/{owner}/{repo}/commits/{id}", status=200, duration_ms=3),
        ),
        (
            "GET /orgs/acme/members 500 in 1200ms",
            call(endpoint="GET /orgs/{org}/members", status=500, duration_ms=1200, ok=False),
        ),
        ("GET /user 304 in 5ms", call(endpoint="GET /user", status=304, duration_ms=5)),
    ],
)
def test_github_request(text: str, expected: ApiCall) -> None:
    assert run("github-request", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "GET /api/users 200 in 12ms",  # the Worker's own route, not a GitHub REST root
        "GET /repository/acme 200 in 12ms",
        "GET /repos/acme/api 200 in ms",
        "GET /repos/acme/api 2000 in 12ms",
        "get /repos/acme/api 200 in 12ms",
        "retry GET /repos/acme/api 200 in 12ms",  # anchored: a request line starts with it
        "GET /repos/acme/api 200 in 12s",
        "GET /repos/acme/api in 12ms",
        "user logged in at 10:00",
    ],
)
def test_github_request_near_misses(text: str) -> None:
    assert run("github-request", text) is None


def test_github_request_failed_has_no_status_and_is_a_failure() -> None:
    found = run("github-request-failed", "GET /repos/acme/api/pulls failed: ECONNRESET")
    assert found == call(endpoint="GET /repos/{owner}/{repo}/pulls", ok=False)
    assert run("github-request-failed", "GET /api/orders failed: timeout") is None
    assert run("github-request-failed", "scan failed repo=acme/api") is None


# Rate-limit readings (`github ratelimit remaining=4981 limit=5000` and the rest) are read by the
# built-in `rate_limit_text`, not by a rule of rules.toml:
# tests/transform/test_extract_rate_limits.py.


@pytest.mark.parametrize(
    ("text", "provider", "model", "tokens_in", "tokens_out"),
    [
        (
            "llm usage model=claude-sonnet-4-5 input_tokens=1234 output_tokens=56",
            "anthropic",
            "claude-sonnet-4-5",
            1234,
            56,
        ),
        (
            "llm usage model=gpt-4o-mini input_tokens=10 output_tokens=5",
            "openai",
            "gpt-4o-mini",
            10,
            5,
        ),
        ("llm usage model=o3-mini input_tokens=7", "openai", "o3-mini", 7, None),
        ("llm usage model=mystery-model-x output_tokens=9", "llm", "mystery-model-x", None, 9),
    ],
)
def test_llm_usage(
    text: str, provider: str, model: str, tokens_in: int | None, tokens_out: int | None
) -> None:
    assert run("llm-usage", text) == call(
        provider=provider, model=model, tokens_in=tokens_in, tokens_out=tokens_out
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"event":"llm_usage","model":"gpt-4o","usage":{"input_tokens":1,"output_tokens":2}}',
        "llm usage input_tokens=10 output_tokens=5",  # no model: nothing to attribute it to
        "llm usage model= input_tokens=10",
        "allm usage model=gpt-4o",
    ],
)
def test_llm_usage_near_misses(text: str) -> None:
    assert run("llm-usage", text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scan completed repo=acme/api files=120 duration_ms=3400",
            Scan("acme/api", "completed", 120, 3400, TS),
        ),
        (
            "scan started repo=octo/cli files=7 duration_ms=50",
            Scan("octo/cli", "started", 7, 50, TS),
        ),
        ("scan failed repo=acme/web", Scan("acme/web", "failed", None, None, TS)),
        ("nightly: scan failed", Scan(None, "failed", None, None, TS)),
    ],
)
def test_scan(text: str, expected: Scan) -> None:
    assert run("scan", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "scan queued repo=acme/api",
        "rescan completed repo=acme/api",
        "scan completedly",
        "scanned repo=acme/api files=12",
        "Scan completed repo=acme/api",
    ],
)
def test_scan_near_misses(text: str) -> None:
    assert run("scan", text) is None


@pytest.mark.parametrize(
    "text",
    [
        "x in " * 50_000,
        "GET /repos/" + "a" * 200_000 + " in ",
        "GET /repos/acme/api failed" * 10_000,
        "github ratelimit " * 15_000,
        "github ratelimit remaining=" * 10_000,
        "llm usage model=" * 15_000,
        "scan started repo=" * 12_000,
        "scan " * 50_000,
    ],
)
def test_builtin_rules_are_linear_on_hostile_lines(text: str) -> None:
    line = LogLine(TS, "log", text)
    started = time.perf_counter()
    for rule in BUILTIN.values():
        rule.apply(line, TS)
    # Linear: a few ms. A quadratic pattern takes seconds to minutes on these.
    assert time.perf_counter() - started < 1.0


# --- the rule dataclass and user files ---------------------------------------------------------


def test_a_rule_is_callable_and_fields_rename_groups() -> None:
    rule = TextRule(
        name="stripe",
        pattern=r"^stripe (?P<verb>[A-Z]+) (?P<url>/v1/\S+) -> (?P<code>\d+)",
        provider="stripe",
        contains=("stripe ",),
        fields=(("method", "verb"), ("endpoint", "url"), ("status", "code")),
    )
    found = rule(LogLine(TS, "log", "stripe POST /v1/charges/ch_123/refunds -> 402"), TS)
    assert found == call(
        provider="stripe", endpoint="POST /v1/charges/ch_123/refunds", status=402, ok=False
    )


def test_provider_from_a_group_and_the_error_group() -> None:
    rule = TextRule(
        name="any-api",
        pattern=(
            r"^call (?P<provider>\w+) (?P<endpoint>/\S*) "
            r"(?:(?P<status>\d{3})|error (?P<error>.+))$"
        ),
    )
    assert rule(LogLine(TS, "log", "call slack /api/chat.postMessage 200"), None) == call(
        provider="slack", endpoint="/api/chat.postMessage", status=200, ts_ms=None
    )
    failed = rule(LogLine(TS, "log", "call slack /api/users/12345 error timeout"), TS)
    assert failed == call(provider="slack", endpoint="/api/users/{id}", ok=False)


def write(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_rules_extend_the_builtin_ones_and_come_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[rule]]
name = "openai-http"
contains = "openai"
pattern = '^openai (?P<endpoint>/v1/\\S+) (?P<status>\\d{3}) model=(?P<model>\\S+)'
""",
    )
    names = [rule.name for rule in load_rules(path)]
    assert names == ["openai-http", *BUILTIN]


def test_user_rule_with_a_builtin_name_replaces_it_and_enabled_false_drops_one(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
[[rule]]
name = "scan"
record = "scan"
contains = "SCAN"
pattern = '^SCAN (?P<status>started|completed|failed) (?P<repo>\\S+)'

[[rule]]
name = "github-request-failed"
enabled = false
""",
    )
    rules = {rule.name: rule for rule in load_rules(path)}
    assert list(rules) == ["scan", "github-request", "llm-usage"]
    line = LogLine(TS, "log", "SCAN completed acme/api")
    assert rules["scan"].apply(line, TS) == Scan("acme/api", "completed", None, None, TS)


def test_include_builtin_false_replaces_the_builtin_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
include_builtin = false

[[rule]]
name = "only"
provider = "x"
pattern = 'x (?P<status>\\d+)'
""",
    )
    assert [rule.name for rule in load_rules(path)] == ["only"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "[[rule]]\nname = 'bad'\nprovider = 'x'\npattern = '(?P<status>\\d+'\n",
            "rules.toml: rule 'bad': pattern: expected a Python regular expression "
            "(missing ), unterminated subpattern at position 0), got '(?P<status>\\\\d+'",
        ),
        (
            "[[rule]]\nname = 'typo'\nprovider = 'x'\npattern = '(?P<tokens_inn>\\d+)'\n",
            "rules.toml: rule 'typo': pattern: expected a field of api_call (provider, endpoint,"
            " method, model, status, duration_ms, tokens_in, tokens_out, rate_limit_remaining, "
            "error) or mapped in fields, got 'group tokens_inn'",
        ),
        (
            "[[rule]]\nname = 'who'\npattern = '(?P<status>\\d+)'\n",
            "rules.toml: rule 'who': provider: expected a fixed provider, or a provider or model "
            "group, got None",
        ),
        (
            "[[rule]]\nname = 'both'\nprovider = 'x'\npattern = '(?P<provider>\\w+)'\n",
            "rules.toml: rule 'both': provider: expected either a fixed provider or a provider "
            "group, got 'both'",
        ),
        (
            "[[rule]]\nname = 's'\nrecord = 'scan'\npattern = 'scan (?P<repo>\\S+)'\n",
            "rules.toml: rule 's': pattern: expected a group for status (completed, failed, "
            "started), got None",
        ),
        (
            "[[rule]]\nname = 'k'\nrecord = 'job'\npattern = 'x'\n",
            "rules.toml: rule 'k': record: expected one of api_call, scan, got 'job'",
        ),
        (
            "[[rule]]\nname = 'f'\nprovider = 'x'\npattern = '(?P<s>\\d+)'\n"
            "fields = {status = 'z'}\n",
            "rules.toml: rule 'f': fields.status: expected the name of a group in pattern, got 'z'",
        ),
        (
            "[[rule]]\nname = 'c'\nprovider = 'x'\npattern = 'x'\ncontains = ['a', 3]\n",
            "rules.toml: rule 'c': contains: expected a non-empty string or a list of them, "
            "got ('a', 3)",
        ),
        (
            "[[rule]]\nname = 'n'\nprovider = 'x'\npattern = 'x'\nnormalize = 'rest'\n",
            "rules.toml: rule 'n': normalize: expected one of ids, github, none, got 'rest'",
        ),
        (
            "[[rule]]\nname = 'm'\nprovider = 'x'\npatern = 'x'\n",
            "rules.toml: rule 'm': patern: expected one of the keys name, record, pattern, "
            "contains, provider, fields, normalize, enabled, got 'patern'",
        ),
        (
            "[[rule]]\nname = 'd'\nprovider = 'x'\npattern = 'x'\n[[rule]]\nname = 'd'\n",
            "rules.toml: rule 'd': name: expected a name no other rule of the file has, got 'd'",
        ),
        (
            "[[rule]]\nprovider = 'x'\npattern = 'x'\n",
            "rules.toml: rule #1: name: expected a non-empty string, got None",
        ),
        ("rules = []\n", "rules.toml: rules: expected one of the keys rule, include_builtin"),
        ("[[rule]\n", "rules.toml: expected valid TOML, got"),
    ],
)
def test_invalid_rules_file_names_the_rule_and_the_problem(
    tmp_path: Path, body: str, message: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(SettingsError) as raised:
        load_rules(path)
    assert str(raised.value).startswith(str(path.parent) + "/" + message)
    assert raised.value.exit_code == 2


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="expected a readable UTF-8 TOML file"):
        load_rules(tmp_path / "absent.toml")
