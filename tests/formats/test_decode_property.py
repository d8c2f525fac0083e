"""Property: whatever the bytes, `decode` returns storable invocations or raises DecodeError.

Four sources of input, about 25,000 examples in all: arbitrary bytes; arbitrary JSON-ish values
serialised with the standard library (which also writes NaN, Infinity, integers past 64 bits
and lone surrogates); structures shaped like each accepted format, with every field sometimes
well-typed and sometimes anything; and the fixtures mutated at the byte level and the JSON
level. A successful decode must also give values that later stages can rely on: types and
ranges of the typed fields, and `extra`/`data` that orjson can serialise (storage). The
`jsonstream` splitter gets a round-trip property of its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import DecodeError
from pipeline.formats import jsonstream
from pipeline.formats.decode import decode
from pipeline.formats.fields import MAX_DURATION_MS, MAX_MS, MIN_MS
from pipeline.formats.invocation import EVENT_TYPES, LOG_LEVELS

FIXTURES = sorted(
    p
    for directory in ("events", "otlp")
    for p in (Path(__file__).parent.parent / "fixtures" / directory).rglob("*")
    if p.is_file() and p.suffix != ".md"
)
FIXTURE_BYTES = [p.read_bytes() for p in FIXTURES]
FIXTURE_VALUES = [orjson.loads(p.read_bytes()) for p in FIXTURES if p.suffix == ".json"]

BASE = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def check(raw: bytes) -> None:
    """Decode `raw`: a DecodeError naming a field, or invocations that keep every promise."""
    try:
        invocations = decode(raw)
    except DecodeError as error:
        refused: DecodeError | None = error
        invocations = []
    else:
        refused = None
    if refused is not None:
        assert isinstance(refused.field, str)
        assert refused.field
        assert isinstance(refused.problem, str)
        assert refused.problem
    for inv in invocations:
        assert inv.event_type in EVENT_TYPES
        assert inv.source in ("trace", "logpush", "envelope", "otlp")
        assert type(inv.outcome) is str
        assert inv.outcome
        for name in ("script", "method", "url", "script_version", "entrypoint"):
            value = getattr(inv, name)
            assert value is None or (type(value) is str and value)
        assert inv.timestamp_ms is None or (
            type(inv.timestamp_ms) is int and MIN_MS <= inv.timestamp_ms < MAX_MS
        )
        assert inv.status is None or (type(inv.status) is int and 0 <= inv.status <= 999)
        for duration in (inv.cpu_ms, inv.wall_ms):
            assert duration is None or (type(duration) is int and 0 <= duration <= MAX_DURATION_MS)
        assert type(inv.truncated) is bool
        assert all(type(tag) is str for tag in inv.script_tags)
        orjson.dumps(inv.extra)  # storable: no over-deep nesting, no integer past 64 bits
        for line in inv.logs:
            assert line.level in LOG_LEVELS
            assert type(line.text) is str
            assert line.data is None or type(line.data) is dict
            assert line.kind is None or (type(line.kind) is str and line.kind)
            assert line.timestamp_ms is None or MIN_MS <= line.timestamp_ms < MAX_MS
            orjson.dumps(line.data)
        for exc in inv.exceptions:
            assert type(exc.name) is str
            assert type(exc.message) is str
            assert exc.stack is None or type(exc.stack) is str
            assert exc.timestamp_ms is None or MIN_MS <= exc.timestamp_ms < MAX_MS


def serialise(value: Any, ascii_only: bool, indent: int | None) -> bytes:
    """The standard library writes what orjson refuses (NaN, big integers, lone surrogates)."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True, indent=indent)
    return text.encode("utf-8", "surrogatepass")


# --- strategies ----------------------------------------------------------------------------------
# Sizes are small on purpose: generation, not decoding, is what costs time here, and the
# decoder's paths are reached by shapes, not by sizes.

KEYS = (  # noqa: SIM905  (one string reads better than 75 lines)
    "scriptName outcome eventTimestamp event logs exceptions diagnosticsChannelEvents "
    "executionModel truncated cpuTime wallTime entrypoint scriptVersion dispatchNamespace "
    "scriptTags tailAttributes preview durableObjectId id envelope request response url method "
    "headers cf status cron scheduledTime queue batchSize mailFrom rcptTo rawSize rpcMethod "
    "consumedEvents getWebSocketEvent type message job log name level timestamp errorInfo "
    "context record stack channel ScriptName Outcome EventTimestampMs EventType Event Logs "
    "Exceptions CPUTimeMs WallTimeMs ScriptTags DispatchNamespace Entrypoint ScriptVersion "
    "RayID Request Response URL Method Status Level Message TimestampMs Name ID Tag Truncated"
).split()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["", "ok", "200", "12", "-1", "1e3", "\u00b2", "1767225600123", "{}", "{"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)


# Inside the format-shaped strategies: one level of anything, far cheaper to draw than
# json_values and enough to be the wrong type for any field.
garbage = st.one_of(
    scalars, st.lists(scalars, max_size=2), st.dictionaries(keys, scalars, max_size=2)
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-typed value, sometimes anything at all: a field of the wrong type is
    then one of many, so the fields checked after it are reached too."""
    # one_of() draws its branches evenly and merges equal ones: distinct copies weight it.
    return st.one_of(*[strategy.map(_same) for _ in range(8)], garbage)


def _same(value: Any) -> Any:
    return value


timestamps = maybe(
    st.one_of(
        st.integers(MIN_MS - 3, MIN_MS + 3),
        st.integers(MIN_MS, MAX_MS),
        st.integers(MAX_MS - 3, MAX_MS + 3),
        st.floats(MIN_MS, MAX_MS),
        st.integers(MIN_MS, MAX_MS).map(str),
    )
)
durations = maybe(
    st.one_of(st.integers(-3, 100_000), st.just(MAX_DURATION_MS + 1), st.integers(0, 99).map(str))
)
statuses = maybe(st.one_of(st.integers(-1, 1000), st.sampled_from(["200", "404", ""])))
levels = maybe(st.sampled_from([*LOG_LEVELS, "WARN", "warning", "fatal", ""]))
short_text = st.text(max_size=8)
double_encoded = st.dictionaries(short_text, garbage, max_size=3).map(json.dumps)
markers = st.sampled_from(
    [
        "Log size limit exceeded: More than 256KB",
        "Trace resource limit exceeded; subsequent exceptions not recorded.",
        "<<<Logpush: messages truncated>>>",
    ]
)
messages = maybe(st.lists(st.one_of(short_text, garbage, double_encoded, markers), max_size=3))
records = maybe(
    st.fixed_dictionaries(
        {"type": maybe(st.sampled_from(["api_call", "scan", "timer", "other"]))},
        optional={
            name: st.one_of(st.integers(-2, 500), short_text, garbage)
            for name in ("status", "duration_ms", "tokens_in", "files", "model")
        },
    )
)
log_entries = maybe(
    st.fixed_dictionaries(
        {"level": levels},
        optional={
            "timestamp": timestamps,
            "message": messages,
            "errorInfo": garbage,
            "context": maybe(st.dictionaries(keys, garbage, max_size=2)),
            "record": records,
        },
    )
)
exception_entries = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "timestamp": timestamps,
            "name": maybe(short_text),
            "message": maybe(st.one_of(short_text, markers)),
            "stack": maybe(short_text),
        },
    )
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "url": maybe(short_text),
        "method": maybe(st.sampled_from(["GET", "POST", ""])),
        "headers": maybe(st.dictionaries(short_text, short_text, max_size=2)),
        "cf": garbage,
    },
)
responses = st.fixed_dictionaries({"status": statuses}, optional={"x": garbage})
events = maybe(
    st.one_of(
        st.none(),
        st.just({}),
        st.fixed_dictionaries(
            {"request": maybe(requests)}, optional={"response": maybe(responses)}
        ),
        st.fixed_dictionaries({"cron": garbage, "scheduledTime": garbage}),
        st.fixed_dictionaries({"scheduledTime": garbage}),
        st.fixed_dictionaries({"queue": garbage, "batchSize": garbage}),
        st.fixed_dictionaries({"rpcMethod": garbage}),
        st.fixed_dictionaries({"getWebSocketEvent": garbage}),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["overload", "overload-stop"]), "message": garbage}
        ),
        st.fixed_dictionaries({"job": maybe(st.fixed_dictionaries({"name": maybe(short_text)}))}),
        st.fixed_dictionaries({"log": garbage}),
        st.dictionaries(keys, garbage, max_size=2),
    )
)
trace_items = st.fixed_dictionaries(
    {"outcome": maybe(st.sampled_from(["ok", "exception", "exceededCpu", "new", ""]))},
    optional={
        "scriptName": maybe(short_text),
        "eventTimestamp": timestamps,
        "event": events,
        "logs": maybe(st.lists(log_entries, max_size=3)),
        "exceptions": maybe(st.lists(exception_entries, max_size=2)),
        "diagnosticsChannelEvents": maybe(
            st.lists(
                st.fixed_dictionaries({"channel": st.sampled_from(["workerd.LimitExceeded", "x"])}),
                max_size=2,
            )
        ),
        "truncated": maybe(st.booleans()),
        "cpuTime": durations,
        "wallTime": durations,
        "scriptVersion": maybe(
            st.fixed_dictionaries({}, optional={"id": maybe(short_text), "tag": garbage})
        ),
        "scriptTags": maybe(st.lists(maybe(short_text), max_size=2)),
        "entrypoint": maybe(short_text),
        "dispatchNamespace": maybe(short_text),
        "envelope": maybe(st.just("tailpipe/1")),
        "unknownKey": garbage,
    },
)
logpush_logs = st.fixed_dictionaries(
    {}, optional={"Level": levels, "Message": messages, "TimestampMs": timestamps}
)
logpush_exceptions = st.fixed_dictionaries(
    {}, optional={"Name": garbage, "message": maybe(short_text), "TimestampMs": timestamps}
)
logpush_events = st.fixed_dictionaries(
    {},
    optional={
        "RayID": garbage,
        "Request": maybe(
            st.fixed_dictionaries({}, optional={"URL": maybe(short_text), "Method": garbage})
        ),
        "Response": maybe(st.fixed_dictionaries({"Status": statuses})),
    },
)
logpush_records = st.fixed_dictionaries(
    {},
    optional={
        "ScriptName": maybe(short_text),
        "Outcome": maybe(st.sampled_from(["ok", "exception", ""])),
        "EventTimestampMs": timestamps,
        "EventType": maybe(st.sampled_from(["fetch", "worker_rpc", "hibernatable_web_socket", ""])),
        "Event": maybe(logpush_events),
        "Logs": maybe(st.lists(st.one_of(markers, logpush_logs), max_size=3)),
        "Exceptions": maybe(st.lists(logpush_exceptions, max_size=2)),
        "CPUTimeMs": durations,
        "WallTimeMs": durations,
        "ScriptTags": maybe(st.lists(short_text, max_size=2)),
        "ScriptVersion": maybe(
            st.fixed_dictionaries({}, optional={"ID": maybe(short_text), "Tag": garbage})
        ),
        "Truncated": maybe(st.booleans()),
    },
)
documents = st.one_of(
    trace_items,
    trace_items,
    logpush_records,
    st.lists(st.one_of(trace_items, logpush_records), max_size=2),
)


# --- properties -----------------------------------------------------------------------------------


@given(st.binary(max_size=600))
@settings(BASE, max_examples=7000)
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@given(json_values, st.booleans(), st.sampled_from([None, 0, 2]))
@settings(BASE, max_examples=2500)
def test_arbitrary_json(value: Any, ascii_only: bool, indent: int | None) -> None:
    check(serialise(value, ascii_only, indent))


@given(
    st.lists(documents, min_size=1, max_size=2),
    st.booleans(),
    st.sampled_from([None, 2]),
    st.sampled_from(["", "\n", " \r\n "]),
)
@settings(BASE, max_examples=3500)
def test_format_shaped_documents(
    values: list[Any], ascii_only: bool, indent: int | None, gap: str
) -> None:
    # One document, or two concatenated as NDJSON or a wrangler-style stream.
    check(gap.encode().join(serialise(v, ascii_only, indent) for v in values))


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert", "truncate"]),
        st.integers(0, 10**6),
        st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


@given(st.sampled_from(FIXTURE_BYTES), mutations)
@settings(BASE, max_examples=5000)
def test_fixtures_mutated_bytes(raw: bytes, changes: list[tuple[str, int, bytes]]) -> None:
    data = bytearray(raw)
    for op, where, junk in changes:
        at = where % (len(data) + 1)
        if op == "flip" and at < len(data):
            data[at] ^= junk[0] or 1
        elif op == "cut":
            del data[at : at + len(junk)]
        elif op == "insert":
            data[at:at] = junk
        elif op == "truncate":
            del data[at:]
    check(bytes(data))


@st.composite
def mutated_fixture(draw: st.DrawFn) -> Any:
    """A fixture with up to three nodes somewhere inside replaced, removed or re-typed."""
    root = json.loads(json.dumps(draw(st.sampled_from(FIXTURE_VALUES))))
    for _ in range(draw(st.integers(1, 3))):
        parent: Any = None
        node, key = root, None
        while isinstance(node, dict | list) and node and draw(st.integers(0, 4)):
            key = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
            parent, node = node, node[key]
        if parent is None:
            continue
        action = draw(st.sampled_from(["replace", "remove", "stringify", "scale"]))
        if action == "remove":
            del parent[key]
        elif action == "stringify":
            parent[key] = json.dumps(node)  # numbers as strings; double-encoded objects
        elif action == "scale" and isinstance(node, int | float) and not isinstance(node, bool):
            parent[key] = -node * 1000 if node else math.inf
        else:
            parent[key] = draw(json_values)
    return root


@given(mutated_fixture(), st.booleans())
@settings(BASE, max_examples=3000)
def test_fixtures_mutated_json(value: Any, ascii_only: bool) -> None:
    check(serialise(value, ascii_only, None))


@given(
    st.lists(json_values, max_size=5),
    st.sampled_from([None, 2]),
    st.lists(st.sampled_from([" ", "\n", "\r\n", "\t"]), min_size=1, max_size=3),
    st.lists(st.integers(1, 50), min_size=1, max_size=5),
)
@settings(BASE, max_examples=1000)
def test_jsonstream_round_trip(
    values: list[Any], indent: int | None, gap: list[str], pieces: list[int]
) -> None:
    option = orjson.OPT_INDENT_2 if indent else 0
    stream, expected = b"", []
    for value in values:
        encoded = orjson.dumps(_storable(value), option=option)
        expected.append(jsonstream.Chunk(stream.count(b"\n") + 1, encoded))
        stream += encoded + "".join(gap).encode()
    assert jsonstream.split(stream) == expected
    # The same chunks however the stream is cut into pieces.
    cuts, at, i = [], 0, 0
    while at < len(stream):
        step = pieces[i % len(pieces)]
        cuts.append(stream[at : at + step])
        at, i = at + step, i + 1
    assert list(jsonstream.split_stream(cuts)) == expected


def _storable(value: Any) -> Any:
    """What orjson can write: NaN, 65-bit integers and lone surrogates mapped to stand-ins."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    return value
