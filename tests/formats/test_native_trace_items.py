"""The native trace-item decoder (`pipeline/native/src/trace_items.rs`) against its reference.

`decode` asks the native core first; `decode.reference` (orjson and the Python walk) stays the
reference. For any bytes the native answer must be None (the reference then decodes) or the
reference's answer exactly: the same records, the same key order in `extra` and `data`, the
same types (`0` is no `-0.0`), and never an answer where the reference refuses the message.
The decline rate on `synth` is bounded too, or a decoder that declined everything would pass.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import fields
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import native
from pipeline.errors import DecodeError
from pipeline.formats import decode as decode_module
from pipeline.formats.entries import LIMIT_LOG_PREFIXES
from pipeline.formats.fields import MAX_DEPTH, MAX_DURATION_MS, MAX_MS, MIN_MS
from pipeline.formats.invocation import Invocation
from pipeline.kafka import synth
from tests.formats.test_decode_property import FIXTURE_BYTES, json_values, serialise, trace_items

NATIVE = decode_module._NATIVE
SETTINGS = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _canon(value: Any) -> Any:
    """A value with its types and dict key order spelled out (`==` ignores both)."""
    if type(value) is dict:
        return ("dict", [(k, _canon(v)) for k, v in value.items()])
    if type(value) in (list, tuple):
        return (type(value).__name__, [_canon(v) for v in value])
    if hasattr(value, "__dataclass_fields__"):
        return (
            type(value).__name__,
            [(f.name, _canon(getattr(value, f.name))) for f in fields(value)],
        )
    return (type(value).__name__, repr(value))


def agrees(raw: bytes) -> bool:
    """Whether the native core decoded `raw` (False: it declined); fails on any disagreement."""
    assert NATIVE is not None
    found: list[Invocation] | None = NATIVE(raw)
    if found is None:
        return False
    try:
        expected = decode_module.reference(raw)
    except DecodeError as error:
        pytest.fail(f"native decoded what the reference refuses ({error}): {raw[:300]!r}")
    assert _canon(found) == _canon(expected), raw[:300]
    return True


def test_a_full_install_decodes_natively() -> None:
    assert native.loaded(), "the native core is not built: run `make venv`"
    assert NATIVE is not None


def test_synth_decodes_natively_and_alike() -> None:
    messages = list(itertools.islice(synth.messages(7, 1_764_374_400_000, poison_ratio=0.02), 5000))
    decoded = sum(agrees(m.value) for m in messages)
    # Declined: the poison, and the invocations with exceptions (5% of outcomes).
    assert decoded >= 0.9 * len(messages)


def test_fixtures_agree() -> None:
    decoded = 0
    for raw in FIXTURE_BYTES:
        decoded += agrees(raw)
        value = orjson.loads(raw) if raw.lstrip()[:1] in (b"{", b"[") and _is_json(raw) else None
        for item in value if type(value) is list else [value] if value is not None else []:
            decoded += agrees(orjson.dumps(item))
    assert decoded > 0


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


@SETTINGS
@given(item=trace_items, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_generated_trace_items_agree(
    item: dict[str, Any], ascii_only: bool, indent: int | None
) -> None:
    agrees(serialise(item, ascii_only, indent))
    agrees(serialise([item, item], ascii_only, indent))


names = st.text(min_size=1, max_size=8)
well_typed_events = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {
            "request": st.fixed_dictionaries(
                {},
                optional={
                    "url": st.one_of(st.none(), st.just(""), names),
                    "method": st.sampled_from(["GET", "POST", "", None]),
                    "headers": st.dictionaries(names, names, max_size=3),
                    "cf": st.dictionaries(names, json_values, max_size=2),
                    "executionModel": json_values,  # also a top-level key: `event.` prefix
                },
            )
        },
        optional={
            "response": st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {}, optional={"status": st.integers(0, 999), "x": json_values}
                ),
            ),
            "scriptVersion": json_values,
            "response.x": json_values,
        },
    ),
    st.fixed_dictionaries({"cron": names, "scheduledTime": st.integers(0, 2**53)}),
    st.fixed_dictionaries({"queue": names, "batchSize": st.integers(0, 100)}),
    st.fixed_dictionaries({"type": st.sampled_from(["overload", "overload-stop", "other"])}),
    st.dictionaries(st.sampled_from(["rpcMethod", "mailFrom", "consumedEvents", "x"]), json_values),
)
well_typed_logs = st.lists(
    st.fixed_dictionaries(
        {"level": st.sampled_from(["debug", "info", "log", "warn", "warning", "error"])},
        optional={
            "timestamp": st.one_of(st.none(), st.integers(MIN_MS, MAX_MS - 1)),
            "message": st.one_of(
                st.none(),
                st.lists(st.one_of(names, st.sampled_from(LIMIT_LOG_PREFIXES)), max_size=3),
                st.lists(json_values, max_size=2),
            ),
        },
    ),
    max_size=3,
)
MESSAGES = [
    "boom",
    "",
    "x: y",
    "Trace resource limit exceeded; subsequent exceptions not recorded.",
]
HEADERS = ["Error", "CustomError", "TypeError", "9bad", "Ünicode", "$x_1", "", " at", "\u2028E"]
FRAMES = ["", "\n    at f (a.js:1:2)", "\n\tat g", "\nat h", "\n  at", "\n \t at i\n    at j"]
stacks = st.one_of(
    st.none(),
    st.just(""),
    st.builds(
        lambda header, sep, message, frames: f"{header}{sep}{message}{frames}",
        st.sampled_from(HEADERS),
        st.sampled_from([": ", ":", ""]),
        st.sampled_from(MESSAGES),
        st.sampled_from(FRAMES),
    ),
)
exception_entries = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": st.one_of(st.none(), st.integers(MIN_MS, MAX_MS - 1)),
        "name": st.one_of(st.none(), st.sampled_from(HEADERS), names),
        "message": st.one_of(st.none(), st.sampled_from(MESSAGES), names),
        "stack": stacks,
    },
)
well_typed_items = st.fixed_dictionaries(
    {
        "outcome": st.sampled_from(["ok", "exception", "exceededCpu", "canceled"]),
        "scriptName": names,
    },
    optional={
        "eventTimestamp": st.one_of(st.none(), st.integers(MIN_MS, MAX_MS - 1)),
        "event": well_typed_events,
        "logs": st.one_of(st.none(), well_typed_logs),
        "exceptions": st.lists(exception_entries, max_size=2),
        "diagnosticsChannelEvents": st.lists(
            st.one_of(
                st.fixed_dictionaries({"channel": st.sampled_from(["workerd.LimitExceeded", "x"])}),
                json_values,
            ),
            max_size=2,
        ),
        "truncated": st.one_of(st.none(), st.booleans()),
        "cpuTime": st.one_of(st.none(), st.integers(0, MAX_DURATION_MS)),
        "wallTime": st.one_of(st.none(), st.integers(0, MAX_DURATION_MS)),
        "scriptVersion": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {}, optional={"id": st.one_of(st.none(), st.just(""), names), "tag": names}
            ),
        ),
        "scriptTags": st.one_of(st.none(), st.lists(names, max_size=2)),
        "entrypoint": st.one_of(st.none(), names),
        "dispatchNamespace": st.one_of(st.none(), names),
        "spanContext": st.none(),
        "executionModel": names,
        "response": json_values,
        "event.response": json_values,
        "tailAttributes": json_values,
    },
)


@SETTINGS
@given(item=well_typed_items, ascii_only=st.booleans())
def test_well_typed_trace_items_agree(item: dict[str, Any], ascii_only: bool) -> None:
    """Items the native core decodes, nearly all (`trace_items` above mostly reaches its
    declines): every field present or not, in any order, event keys meeting top-level ones."""
    keys = list(item)
    for order in (keys, keys[::-1]):
        agrees(serialise({k: item[k] for k in order}, ascii_only, None))


base_item = {
    "scriptName": "w",
    "outcome": "ok",
    "eventTimestamp": 1_764_374_400_000,
    "event": {"request": {"url": "https://x/", "method": "GET"}, "response": {"status": 200}},
}
arguments = st.one_of(
    json_values,
    json_values.map(json.dumps),  # double-encoded JSON, with NaN and big integers at times
    json_values.map(lambda v: f" {json.dumps(v)}\n"),  # padded
    st.sampled_from(
        ["{", "{}", "{x}", '{"a":1,"a":2}', '{"a":-0}', '{"a":1e400}', "\x1f{}", "a\x85"]
    ),
)


@SETTINGS
@given(args=st.lists(arguments, max_size=4), extra=json_values)
def test_console_arguments_and_extra_agree(args: list[Any], extra: Any) -> None:
    item = {
        **base_item,
        "logs": [{"timestamp": 1_764_374_400_001, "level": "log", "message": args}],
    }
    agrees(serialise({**item, "tailAttributes": extra}, ascii_only=False, indent=None))


@pytest.mark.parametrize(
    "text",
    [
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "--1",
        "+1",
        "0x10",
        "NaN",
        "Infinity",
        "tru",
        "nul",
        '"a',
        '"\\x"',
        '"\\u12"',
        '"\\ud800"',
        '"\\udc00\\ud800"',
        '"\x01"',
        "[1,]",
        "[,1]",
        '{"a":1,}',
        '{"a" 1}',
        "{1:2}",
        "\ufeff{}",
        "{} {}",
        "1 2",
        '"\\u0000"',
        "-0",
        "-0.0",
        "1E400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1.5e-320",
        "0.1",
        '"\\ud83d\\ude00"',
        '"\\/"',
        '{"a":1,"a":2}',
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    ],
)
def test_json_edges_agree_or_decline(text: str) -> None:
    """The reader is strict where orjson is, and declines where they could part."""
    for value in (text, f"[{text}]", f'{{"k":{text}}}'):
        for raw in (
            f'{{"scriptName":"w","outcome":"ok","odd":{value}}}',
            json.dumps({**base_item, "logs": [{"level": "log", "message": [value]}]}),
        ):
            agrees(raw.encode("utf-8", "surrogatepass"))


def test_many_distinct_keys_agree() -> None:
    """More names than the key cache holds: evicted and replaced slots give the same dicts."""
    for start in range(0, 3000, 500):
        headers = {f"x-header-{n}": str(n) for n in range(start, start + 500)}
        item = {**base_item, "event": {"request": {"url": "u", "headers": headers}}}
        assert agrees(orjson.dumps(item))


def test_big_object_with_a_duplicate_key_declines() -> None:
    """Duplicates are found past the pairwise check too (orjson keeps the last value)."""
    members = ",".join(f'"k{n}":{n}' for n in range(100))
    raw = f'{{"scriptName":"w","outcome":"ok","odd":{{{members},"k3":0}}}}'.encode()
    assert NATIVE is not None
    assert NATIVE(raw) is None
    assert decode_module.reference(raw)[0].extra["odd"]["k3"] == 0


@pytest.mark.parametrize(
    ("name", "message", "stack"),
    [
        ("Error", "boom", "CustomError: boom\n    at f (a.js:1:2)"),  # a subclass: reported_name
        ("Error", "boom", "Error: boom\n    at f (a.js:1:2)"),  # the header dropped
        ("Error", "", "CustomError\n    at f"),  # no message: the name alone
        ("Error", "boom", "CustomError: other\n    at f"),  # not the error's header: kept
        ("Error", "boom", "    at f (a.js:1:2)"),  # frames alone
        ("Error", "boom", "Ünicode: boom\n    at f"),  # declined: a Unicode class name
        ("Error", "Trace resource limit exceeded; subsequent exceptions not recorded.", None),
    ],
)
def test_exceptions_agree(name: str, message: str, stack: str | None) -> None:
    entry = {"timestamp": 1_764_374_400_002, "name": name, "message": message, "stack": stack}
    raw = orjson.dumps({**base_item, "exceptions": [entry], "outcome": "exception"})
    decoded = agrees(raw)
    assert decoded == (not stack or not stack.startswith("Ü"))
