"""Property: whatever a user writes, a setting, an alert rule, a destination or a command-line
argument gives a valid value, or exit code 2 with one line naming what was wrong. Never a
traceback, never a value that breaks later (nan, inf, a number from another script's digits).

The inputs: arbitrary text (any Unicode, `\u00b2` and other digits of other scripts, NUL, line
breaks, lone surrogates), the numbers and words parsers trip on (`nan`, `inf`, `1e400`, 5000
digits, `-0`, `1_000`, `http://[`), and for the TOML files every TOML type (strings, integers
beyond 64 bits, nan and inf floats, booleans, arrays, tables). Every setting is covered, read
from `Settings`' own fields; every key of every rule, from the packaged rules file.

Then the same through the real command line: `cli.main` in process for many values, and
`python -m pipeline` in a child process for a sample, with the exact stderr checked. The
regressions of issue 17 item 6 (each failed before the fix) are at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import cli, datafile, parse
from pipeline.alerts import destinations
from pipeline.alerts.rules import SEVERITIES, Rule, Rules
from pipeline.errors import SettingsError
from pipeline.settings import FIELDS, Settings, env_name, load, render_toml
from tests.conftest import tailpipe

EXAMPLES = int(os.environ.get("TAILPIPE_PROPERTY_EXAMPLES", "300"))
"""Examples per property (TAILPIPE_PROPERTY_EXAMPLES=20000 for a long run)."""
BASE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MIN_DURATION_S, MAX_DURATION_S = 0.001, 36500 * 86400
"""The duration grammar's range (pipeline/parse.py): 1 ms to 36500 days."""
DURATION = "a duration like 500ms, 30s, 15m, 1h or 7d (1ms to 36500d)"
MAX_INT = 2**63 - 1
DESTINATION_KEYS = ("name", "kind", "url", "severities", "scripts", "per_minute", "secret")

# -- inputs -------------------------------------------------------------------------------------
TRICKY = [
    "",
    " ",
    "0",
    "-0",
    "+1",
    "1",
    "7",
    "65535",
    "65536",
    "-1",
    "1_000",
    "0x10",
    "1e3",
    "1e400",
    "-1e400",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "1.5",
    ".5",
    "5.",
    "1h",
    "15m",
    "30s",
    "500ms",
    "7d",
    "0s",
    "0.0001",
    "0.0001s",
    "1e-9",
    "90m",
    "1h30m",
    "36500d",
    "36501d",
    "99999999999d",
    "\u00b2",
    "\u0663",
    "\u0661\u0662",
    "\u216b",
    "\u0ae9\u0ae6s",
    "\U0001f101",
    "9" * 5000,
    "0" * 5000 + "5",
    "1" * 30,
    " 5 ",
    "5\n",
    "\t5",
    "\u00a05",
    "5\u2028",
    "a\nb",
    "\x00",
    "a\x00b",
    "\udcff",
    "\r",
    "http://[",
    "https://[::1",
    "postgresql://[",
    "postgresql://u:pw@[",
    "s3://[",
    "http://",
    "http://h:99999",
    "s3://",
    "file://x",
    "h:1",
    "h:0",
    "[::1]:9092",
    "h:\u0669\u0660\u0669\u0662",
    "a,b",
    ",",
    "true",
    "false",
    "PLAINTEXT",
    "SASL_SSL",
    "SCRAM-SHA-512",
    "json",
    "debug",
    "postgresql://u@h/db?sslmode=bogus",
    "s3://bucket/prefix",
    "file:///tmp/x",
    "tail-events",
]
tricky = st.sampled_from(TRICKY)
env_text = st.one_of(
    st.text(),
    tricky,
    st.integers().map(str),
    st.floats().map(str),
    st.from_regex(r"\A[ ]?[0-9]{0,25}(\.[0-9]{0,6})?(ms|s|m|h|d|)?[ ]?\Z"),
    st.builds(lambda a, b: a + b, tricky, st.text(max_size=3)),
)
"""A value as the environment holds it: any string."""

toml_text = st.text(st.characters(exclude_categories=["Cs"]))  # TOML holds no lone surrogate
toml_scalars = st.one_of(
    toml_text,
    tricky.filter(lambda t: not re.search(r"[\ud800-\udfff]", t)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63 - 5, max_value=2**63 - 1),
    st.integers(),  # beyond 64 bits too: tomllib reads any integer
    st.sampled_from([10**400, -(10**400)]),  # beyond any float
    st.floats(),  # nan, inf, -0.0, subnormals
    st.booleans(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(toml_text, inner, max_size=3)
    ),
    max_leaves=8,
)
"""A value as a TOML file can hold it."""


def toml(value: Any) -> str:
    """`value` written as a TOML value (inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml(str(k))} = {toml(v)}" for k, v in value.items()) + "}"


@contextlib.contextmanager
def toml_file(text: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "file.toml"
        path.write_text(text, encoding="utf-8")
        yield str(path)


def attempt(load_it: Callable[[], Any]) -> tuple[Any, SettingsError | None]:
    """`(value, None)`, or `(None, the SettingsError)`: anything else propagates (a bug)."""
    try:
        return load_it(), None
    except SettingsError as exc:
        return None, exc


def one_line(message: str) -> None:
    assert "\n" not in message
    assert len(message.splitlines()) == 1, message


# -- settings -----------------------------------------------------------------------------------
NAMES = sorted(FIELDS)
SASL = {
    "TAILPIPE_KAFKA_SASL_MECHANISM": "PLAIN",
    "TAILPIPE_KAFKA_SASL_USERNAME": "u",
    "TAILPIPE_KAFKA_SASL_PASSWORD": "p",
}


def _environment(name: str) -> dict[str, str]:
    """The rest of the environment: when the protocol is the setting under test, SASL
    credentials too, so that any protocol it accepts makes valid settings."""
    return dict(SASL) if name == "kafka_security_protocol" else {}


def assert_valid(loaded: Settings, name: str) -> None:
    """A value that later stages can rely on, and that `tailpipe config` writes back."""
    value = getattr(loaded, name)
    default: Any = FIELDS[name].default  # every setting has one: never MISSING
    assert type(value) is type(default), (name, value)
    if isinstance(value, float):
        assert math.isfinite(value)
        assert value > 0
    if FIELDS[name].metadata["parse"].__name__ == "duration":
        assert MIN_DURATION_S <= value <= MAX_DURATION_S
    if isinstance(value, int):
        assert 0 <= value <= MAX_INT
        if name.endswith("_port"):
            assert value <= 65535
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, str):
            assert "\x00" not in item
            item.encode("utf-8")  # no lone surrogate
    with toml_file(render_toml(loaded, mask=False)) as path:
        assert load(path, environ={}) == loaded  # `tailpipe config` output reads back


@BASE
@given(name=st.sampled_from(NAMES), raw=env_text)
@example(name="batch_max_rows", raw="\u00b2")
@example(name="batch_max_rows", raw="9" * 5000)
@example(name="batch_max_age", raw="nan")
@example(name="s3_endpoint", raw="http://[")
@example(name="kafka_sasl_username", raw="a\nb")
def test_any_environment_value_of_any_setting(name: str, raw: str) -> None:
    variable = env_name(name)
    loaded, error = attempt(lambda: load(environ={**_environment(name), variable: raw}))
    if error is not None:
        assert error.name == variable
        one_line(str(error))
        return
    assert_valid(loaded, name)


@BASE
@given(name=st.sampled_from(NAMES), raw=toml_values)
@example(name="batch_max_age", raw=10**400)
@example(name="batch_max_age", raw=float("nan"))
@example(name="api_port", raw=True)
def test_any_toml_value_of_any_setting(name: str, raw: Any) -> None:
    document = "".join(f'{k.removeprefix("TAILPIPE_").lower()} = "{v}"\n'
                       for k, v in _environment(name).items())  # fmt: skip
    with toml_file(document + f"{name} = {toml(raw)}\n") as path:
        loaded, error = attempt(lambda: load(path, environ={}))
    if error is not None:
        assert error.name == env_name(name)
        one_line(str(error))
        return
    assert_valid(loaded, name)


@BASE
@given(key=toml_text.filter(lambda k: k not in FIELDS), raw=toml_scalars)
def test_an_unknown_key_in_the_settings_file_is_named_on_one_line(key: str, raw: Any) -> None:
    with toml_file(f"{toml(key)} = {toml(raw)}\n") as path, pytest.raises(SettingsError) as got:
        load(path, environ={})
    assert got.value.name == f"{path}: {key if key.isprintable() else repr(key)}"
    one_line(str(got.value))


def run_cli(argv: list[str], environ: dict[str, str]) -> tuple[int, str, str]:
    """`tailpipe ARGV` in this process, with `environ` added to the environment."""
    out, err = io.StringIO(), io.StringIO()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAILPIPE_")}
    with (
        mock.patch.dict(os.environ, {**clean, **environ}, clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


@BASE
@given(name=st.sampled_from(NAMES), raw=env_text.filter(lambda t: "\x00" not in t))
@example(name="batch_max_rows", raw="\u00b2")
def test_tailpipe_config_with_any_value_of_any_setting(name: str, raw: str) -> None:
    """In process: exit 0 and a valid TOML file, or exit 2 and one line naming the variable."""
    variable = env_name(name)
    code, out, err = run_cli(["config"], {**_environment(name), variable: raw})
    if code == 0:
        assert err == ""
        tomllib.loads(out)
        return
    assert code == 2, err
    assert out == ""
    assert err.startswith(f"tailpipe: {variable}: expected "), err
    assert err.endswith("\n")
    one_line(err[:-1])


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(NAMES), raw=env_text.filter(lambda t: "\x00" not in t))
@example(name="batch_max_rows", raw="\u00b2")
@example(name="postgres_dsn", raw="postgresql://u:secret@[")
def test_the_real_command_with_a_sample_of_values(name: str, raw: str) -> None:
    """In a child process, `python -m pipeline config`, as a user runs it."""
    variable = env_name(name)
    result = tailpipe("config", env={**_environment(name), variable: raw})
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        tomllib.loads(result.stdout)
        return
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"tailpipe: {variable}: expected "), result.stderr
    one_line(result.stderr.removesuffix("\n"))
    assert "secret" not in result.stderr  # a DSN's password stays masked


# -- alert rules --------------------------------------------------------------------------------
_, PACKAGED = datafile.packaged_from("pipeline.alerts", "rules.toml")
RULE_KEYS = sorted(
    (rule, key) for rule, table in PACKAGED.items() for key in {*table, "enabled", "cooldown"}
)


def assert_valid_rules(rules: Rules) -> None:
    for name in rules.__dataclass_fields__:
        value = getattr(rules, name)
        if isinstance(value, Rule):
            assert isinstance(value.enabled, bool)
            assert value.severity in SEVERITIES
            assert isinstance(value.cooldown_ms, int)
            assert value.cooldown_ms >= 1
            value.window_start(1_764_374_400_000)
        elif isinstance(value, float):
            assert math.isfinite(value)
            assert value >= 0
        elif isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value <= 2**31 - 1
    assert rules.error_rate_window_h >= 1
    assert rules.slow_window_h >= 1
    assert rules.stalled_after_ms >= 1
    assert 1 <= rules.anomaly_days <= 366
    assert 0 <= rules.anomaly_alpha <= 1


@BASE
@given(rule_key=st.sampled_from(RULE_KEYS), raw=toml_values)
@example(rule_key=("outcome", "cooldown"), raw="nan")
@example(rule_key=("outcome", "cooldown"), raw="inf")
@example(rule_key=("outcome", "cooldown"), raw=0.0001)
@example(rule_key=("slow", "min_requests"), raw=float("inf"))
@example(rule_key=("error_rate", "above"), raw=float("nan"))
@example(rule_key=("error_log", "enabled"), raw="false")
@example(rule_key=("error_log", "pattern"), raw="a{4294967296}")
@example(rule_key=("error_rate", "window"), raw="99999999999d")
def test_any_value_of_any_rule_key(rule_key: tuple[str, str], raw: Any) -> None:
    rule, key = rule_key
    with toml_file(f"[{rule}]\n{key} = {toml(raw)}\n") as path:
        rules, error = attempt(lambda: Rules.load(path))
    if error is not None:
        assert error.name.startswith(f"{path}: [{rule}]"), error
        one_line(str(error))
        return
    assert_valid_rules(rules)


@BASE
@given(rule=st.sampled_from(sorted(PACKAGED)), key=toml_text, raw=toml_values)
def test_any_key_or_table_in_a_rules_file(rule: str, key: str, raw: Any) -> None:
    """An unknown key, or a whole rule that is not a table, is named on one line."""
    for text in (f"[{rule}]\n{toml(key)} = {toml(raw)}\n", f"{rule} = {toml(raw)}\n"):
        with toml_file(text) as path:
            rules, error = attempt(lambda: Rules.load(path))
        if error is not None:
            assert error.name.startswith(f"{path}: [{rule}]"), error
            one_line(str(error))
            continue
        assert_valid_rules(rules)


# -- alert destinations -------------------------------------------------------------------------
VALID_DESTINATION = {"name": "ops", "kind": "webhook", "url": "https://hooks.example.test/x"}
ALERT = {"id": "x", "rule": "outcome", "severity": "critical", "script": "api", "summary": "s"}


@BASE
@given(key=st.sampled_from(DESTINATION_KEYS), raw=toml_values)
@example(key="per_minute", raw=float("inf"))
@example(key="per_minute", raw=True)
@example(key="scripts", raw=[1])
@example(key="url", raw="http://")
@example(key="name", raw="a\nb")
def test_any_value_of_any_destination_key(key: str, raw: Any) -> None:
    table = {**VALID_DESTINATION, key: raw}
    body = "[[destination]]\n" + "".join(f"{toml(k)} = {toml(v)}\n" for k, v in table.items())
    with toml_file(body) as path:
        found, error = attempt(lambda: destinations.load(path))
    if error is not None:
        assert error.name.startswith(f"{path}: destination "), error
        assert error.name.endswith(f": {key}"), error
        one_line(str(error))
        return
    [loaded] = found
    assert loaded.name
    assert loaded.kind in destinations.KINDS
    assert parse.http_url("url", loaded.url) == loaded.url
    assert loaded.severities <= {"critical", "warning"}
    assert all(isinstance(s, str) for s in loaded.scripts)
    assert 1 <= loaded.per_minute <= 60_000
    loaded.wants(ALERT)
    loaded.request(ALERT, 1)


@BASE
@given(raw=toml_values)
@example(raw=5)
def test_any_destinations_document(raw: Any) -> None:
    with toml_file(f"destination = {toml(raw)}\n") as path:
        _, error = attempt(lambda: destinations.load(path))
    if error is not None:
        assert error.name.startswith(path), error
        one_line(str(error))


# -- command-line arguments ---------------------------------------------------------------------
def _duration_ok(value: Any) -> bool:
    return isinstance(value, float) and MIN_DURATION_S <= value <= MAX_DURATION_S


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and low <= v <= high


ARGUMENTS: list[tuple[list[str], str, str, Callable[[Any], bool]]] = [
    (["dlq", "list"], "--since", "since", _duration_ok),
    (["dlq", "replay"], "--since", "since", _duration_ok),
    (["loadgen"], "--duration", "duration", _duration_ok),
    (["loadgen"], "--count", "count", _int_in(1, 2**31 - 1)),
    (["loadgen", "--count=1"], "--rate", "rate", lambda v: math.isfinite(v) and v > 0),
    (["loadgen", "--count=1"], "--poison-ratio", "poison_ratio", lambda v: 0 <= v <= 1),
    (["loadgen", "--count=1"], "--reject-ratio", "reject_ratio", lambda v: 0 <= v <= 1),
    (["loadgen", "--count=1"], "--seed", "seed", _int_in(-(2**63), 2**63 - 1)),
    (["loadgen", "--count=1"], "--start-ms", "start_ms", _int_in(0, 253_402_300_799_999)),
    (["loadgen", "--count=1"], "--step-ms", "step_ms", _int_in(1, 2**31 - 1)),
    (["retention"], "--keep-days", "keep_days", _int_in(1, 36500)),
    (["topics", "create"], "--partitions", "partitions", _int_in(1, 2**31 - 1)),
    (["topics", "create"], "--replication-factor", "replication_factor", _int_in(1, 2**31 - 1)),
    (["probe", "live"], "--port", "port", _int_in(1, 65535)),
    (["probe", "live"], "--timeout", "timeout", _duration_ok),
]


@BASE
@given(argument=st.sampled_from(ARGUMENTS), raw=env_text)
@example(argument=ARGUMENTS[0], raw="nan")
@example(argument=ARGUMENTS[0], raw="99999999999d")
@example(argument=ARGUMENTS[4], raw="nan")
@example(argument=ARGUMENTS[10], raw="\u00b2")
def test_any_command_line_argument(
    argument: tuple[list[str], str, str, Callable[[Any], bool]], raw: str
) -> None:
    """A valid value, or argparse's usage and one error line naming the argument (exit 2)."""
    command, flag, dest, valid = argument
    err = io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stderr(err):
        try:
            parsed = cli.build_parser().parse_args([*command, f"{flag}={raw}"])
        except SystemExit as exit_:
            code = exit_.code
    if code:
        assert code == 2
        last = err.getvalue().rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith(f"tailpipe {command[0]}: error: argument {flag}: "), last
        assert "Traceback" not in err.getvalue()
        return
    assert valid(getattr(parsed, dest)), (flag, raw, getattr(parsed, dest))


# -- regressions: each failed before the fix (issue 17 item 6) ---------------------------------
def test_a_superscript_digit_exits_2_with_one_line() -> None:
    """Before: `str.isdigit` is true for a superscript two, then `int()` of it raised
    ValueError: a traceback and exit 1."""
    result = tailpipe("config", env={"TAILPIPE_BATCH_MAX_ROWS": "\u00b2"})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "tailpipe: TAILPIPE_BATCH_MAX_ROWS: expected a positive integer, got '\u00b2'\n"
    )


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TAILPIPE_BATCH_MAX_ROWS", "\u0663"),  # before: accepted as 3
        ("TAILPIPE_BATCH_MAX_ROWS", "9" * 5000),  # before: ValueError, int() digit limit
        ("TAILPIPE_BATCH_MAX_AGE", "\u0661"),  # before: accepted as 1.0
        ("TAILPIPE_S3_ENDPOINT", "http://["),  # before: ValueError from urlsplit
        ("TAILPIPE_POSTGRES_DSN", "postgresql://["),  # before: ValueError from urlsplit
        ("TAILPIPE_DLQ_URL", "s3://["),  # before: ValueError from urlsplit
        ("TAILPIPE_KAFKA_BOOTSTRAP", "h:\u0669\u0660\u0669\u0662"),  # before: accepted
        ("TAILPIPE_KAFKA_BOOTSTRAP", "h:99999"),  # before: accepted
        ("TAILPIPE_KAFKA_SASL_USERNAME", "\udcff"),  # before: accepted (not UTF-8)
        ("TAILPIPE_CONNECT_TIMEOUT", "nan"),
    ],
)
def test_odd_setting_values_are_refused_on_one_line(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as got:
        load(environ={variable: raw})
    assert got.value.name == variable
    one_line(str(got.value))


def test_a_bad_local_stack_port_falls_back_to_the_default() -> None:
    """Before: `TAILPIPE_LOCAL_KAFKA_PORT=\u00b2` raised ValueError in the defaults."""
    assert (
        load(environ={"TAILPIPE_LOCAL_KAFKA_PORT": "\u00b2"}).kafka_bootstrap == "127.0.0.1:19092"
    )


def test_a_huge_integer_for_a_number_in_the_settings_file(tmp_path: Path) -> None:
    """Before: `float(10**400)` raised OverflowError."""
    path = tmp_path / "c.toml"
    path.write_text(f"batch_max_age = {10**400}\n")
    with pytest.raises(SettingsError, match="TAILPIPE_BATCH_MAX_AGE"):
        load(path, environ={})


def test_config_output_with_control_characters_reads_back(tmp_path: Path) -> None:
    """Before: a line break in a value was written raw inside a TOML string: invalid TOML."""
    original = load(environ={"TAILPIPE_KAFKA_SASL_USERNAME": 'a\nb\t\x7f"\\'})
    path = tmp_path / "round.toml"
    path.write_text(render_toml(original, mask=False))
    assert load(path, environ={}) == original


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    """Before: UnicodeDecodeError from tomllib: a traceback."""
    path = tmp_path / "c.toml"
    path.write_bytes(b"topic = '\xff'\n")
    result = tailpipe("--config", str(path), "config")
    assert result.returncode == 2
    assert result.stderr.startswith("tailpipe: --config: expected a readable TOML file")
    one_line(result.stderr.removesuffix("\n"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[outcome]\ncooldown = "nan"\n', "[outcome] cooldown"),  # before: ValueError
        ('[outcome]\ncooldown = "inf"\n', "[outcome] cooldown"),  # before: OverflowError
        ("[outcome]\ncooldown = 0.0001\n", "[outcome] cooldown"),  # before: 0 ms, then 1/0
        ("outcome = 5\n", "[outcome]"),  # before: TypeError
        ("[slow]\nmin_requests = inf\n", "[slow] min_requests"),  # before: OverflowError
        ("[error_rate]\nabove = nan\n", "[error_rate] above"),  # before: accepted
        ('[error_log]\nenabled = "false"\n', "[error_log] enabled"),  # before: enabled
        ('[error_log]\npattern = "a{4294967296}"\n', "[error_log] pattern"),  # OverflowError
        ("[error_log]\npattern = 5\n", "[error_log] pattern"),  # before: the regex '5'
        ("[anomaly]\ndays = 1000000000\n", "[anomaly] days"),  # before: a list of 1e9 hours
        ('[outcome]\n"a\\nb" = 1\n', "[outcome]: 'a\\nb'"),  # before: a two-line message
    ],
)
def test_odd_rule_values_are_refused_naming_rule_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as got:
        Rules.load(str(path))
    assert got.value.name.startswith(f"{path}: {named}"), got.value
    one_line(str(got.value))


def test_a_nan_cooldown_stops_tailpipe_run_with_exit_2(tmp_path: Path) -> None:
    """The issue's case end to end: before, `tailpipe run` died with a ValueError traceback."""
    path = tmp_path / "rules.toml"
    path.write_text('[outcome]\ncooldown = "nan"\n')
    result = tailpipe("run", env={"TAILPIPE_ALERT_RULES": str(path), "TAILPIPE_METRICS_PORT": "0"})
    assert result.returncode == 2
    assert result.stderr == (
        f"tailpipe: {path}: [outcome] cooldown: expected {DURATION}, got 'nan'\n"
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[[destination]]\nkind = 'webhook'\nurl = 'http://x.test'\nper_minute = inf\n",
         "destination destination-1: per_minute"),  # before: OverflowError
        ("destination = 5\n", "destination"),  # before: TypeError
        ("[[destination]]\nkind = 'webhook'\nurl = 'http://x.test'\nscripts = [1]\n",
         "destination destination-1: scripts"),  # before: accepted, then a TypeError when routing
        ("[[destination]]\nkind = 'webhook'\nurl = 'http://'\n",
         "destination destination-1: url"),  # before: accepted
        ("[[destination]]\nkind = 'webhook'\nurl = 'http://x.test'\nper_minute = true\n",
         "destination destination-1: per_minute"),  # before: 1 a minute
    ],
)  # fmt: skip
def test_odd_destinations_exit_2_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text(text)
    result = tailpipe("alerts", "forward", env={"TAILPIPE_ALERT_DESTINATIONS": str(path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"tailpipe: {path}: {named}: expected "), result.stderr
    one_line(result.stderr.removesuffix("\n"))


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "--since", "nan"],  # before: accepted as nan
        ["dlq", "list", "--since", "inf"],  # before: accepted as inf
        ["dlq", "list", "--since", "1e400"],  # before: accepted as inf
        ["dlq", "list", "--since", "99999999999d"],  # before: OverflowError when listing
        ["loadgen", "--duration", "nan"],  # before: accepted
        ["loadgen", "--count", "10", "--rate", "nan"],  # before: accepted
        ["loadgen", "--count", "10", "--rate=-5"],  # before: accepted
        ["loadgen", "--count", "\u0663"],  # before: accepted as 3
        ["loadgen", "--count", "1", "--start-ms", "\u0661\u0662"],  # before: accepted as 12
        ["retention", "--keep-days", "\u00b2"],  # before: "invalid _positive value"
        ["retention", "--keep-days", "99999999"],  # before: OverflowError from timedelta
        ["probe", "live", "--timeout", "nan"],  # before: accepted
        ["topics", "create", "--partitions=-3"],  # before: accepted
    ],
)
def test_odd_arguments_exit_2_naming_the_argument(argv: list[str]) -> None:
    result = tailpipe(*argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    flag = [a for a in argv if a.startswith("--")][-1].split("=")[0]
    assert last.startswith(f"tailpipe {argv[0]}: error: argument {flag}: expected "), last


def test_one_duration_grammar() -> None:
    seconds = {"90": 90, "90s": 90, "500ms": 0.5, "1.5m": 90, "1h": 3600, "7d": 604800,
               " 15m ": 900, ".5s": 0.5, "1ms": 0.001, "36500d": 36500 * 86400}  # fmt: skip
    for raw, expected in seconds.items():
        assert parse.duration("d", raw) == pytest.approx(expected), raw
        assert cli._duration(raw) == pytest.approx(expected), raw
    assert parse.duration("d", 30) == 30.0  # a TOML number: seconds
    assert parse.duration_ms("d", "15m") == 900_000
    for bad in [
        "",
        "0",
        "0s",
        "-5s",
        "+5s",
        "1e3",
        "nan",
        "inf",
        "1h30m",
        "5 m",
        "5M",
        "5sec",
        "0.0001s",
        "36501d",
        "\u00b2s",
        "1_000s",
        True,
        float("nan"),
        float("inf"),
        -1,
        [1],
    ]:
        with pytest.raises(SettingsError):
            parse.duration("d", bad)
