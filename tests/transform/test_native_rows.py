"""Rows built by the native core (`rows` of `pipeline/native/src/trace_items.rs`) against the
transformer's own (`Transformer._rows`, from `decode`'s invocations).

`Transformer.add` takes the native rows where the core gives them, and redoes with the
reference what redaction may change (`dirty`). With or without them, a batch must hold the same
rows, dead letters, redaction counts, rollups and alerts, byte for byte: synth with secrets and
poison, the fixtures, and generated items carrying secrets in every place one can hide.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.alerts.rules import Rules
from pipeline.formats import decode as decode_module
from pipeline.kafka import synth
from pipeline.transform import transformer as transformer_module
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.transformer import Transformer
from tests.formats.test_decode_property import FIXTURE_BYTES, FIXTURES
from tests.formats.test_native_trace_items import base_item, well_typed_items

NATIVE_ROWS = transformer_module._NATIVE_ROWS
FIXTURE_LOGPUSH = [
    raw for path, raw in zip(FIXTURES, FIXTURE_BYTES, strict=True) if "logpush" in path.parts
]
TRANSFORMER = Transformer(Extractor.from_files(), Rules.load())
SETTINGS = settings(
    max_examples=600,
    deadline=None,
    # `monkeypatch` is used through `context()`, which undoes itself after every example.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def _batch(values: Iterable[bytes], monkeypatch: pytest.MonkeyPatch, native: bool) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(transformer_module, "_NATIVE_ROWS", NATIVE_ROWS if native else None)
        batch = Batch(created=0.0)
        for offset, value in enumerate(values):
            TRANSFORMER.add(batch, "t", offset % 3, offset, 1_764_374_400_000, None, value)
    out = [repr((batch.messages, batch.rows, batch.bytes, batch.oldest_event_ms))]
    for key, part in sorted(batch.parts.items()):
        out += [repr(key), repr(part.events), repr(part.logs), repr(part.dead)]
        out += [repr(sorted(part.redactions.items())), repr(part.rollups)]
    return "\n".join(out)


def same(values: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    native = _batch(values, monkeypatch, native=True)
    reference = _batch(values, monkeypatch, native=False)
    assert native == reference


def test_a_full_install_builds_rows_natively() -> None:
    assert NATIVE_ROWS is not None, "the native core is not built: run `make venv`"


def test_synth_rows_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = synth.messages(7, 1_764_374_400_000, poison_ratio=0.02, reject_ratio=0.01)
    values = [m.value for m in itertools.islice(messages, 4000)]
    assert NATIVE_ROWS is not None
    built = [NATIVE_ROWS(v, 0, ("t", 0, 0)) for v in values]
    native = [b[1] for b in built if b is not None and b[0]]
    # Most messages are built natively, and some of those redone where redaction may change them.
    assert len(native) >= 0.85 * len(values)
    assert any(dirty is not None for found in native for *_, dirty in found)
    same(values, monkeypatch)


def test_rows_left_to_the_transformer_come_with_the_invocations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A float in a JSON column (its text is orjson's to write): no rows, but the invocations
    `decode` gives, from the same parse. A format the native decoder declines: None, and its
    decoder declines it too, so the transformer asks the reference alone."""
    assert NATIVE_ROWS is not None
    floats = {**base_item, "logs": [{"level": "log", "message": ['{"ms": 1.5}']}]}
    raw = json.dumps(floats).encode()
    found = NATIVE_ROWS(raw, 0, ("t", 0, 0))
    assert found is not None
    assert found[0] is False
    assert repr(found[1]) == repr(decode_module.decode(raw))
    logpush = FIXTURE_LOGPUSH[0]
    assert NATIVE_ROWS(logpush, 0, ("t", 0, 0)) is None
    assert decode_module._NATIVE is not None
    assert decode_module._NATIVE(logpush) is None
    same([raw, logpush], monkeypatch)


def test_fixture_rows_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    same(FIXTURE_BYTES, monkeypatch)


SECRETS = [
    "Authorization: Bearer ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "token=abcdefabcdef0123456789",
    "input_tokens=12 output_tokens=3",
    "https://u:hunter2@db.internal/x?api_key=abc123def456",
    "AKIAIOSFODNN7EXAMPLE",
    "%70assword",
    "error: boom",
]
secret_values = st.one_of(st.sampled_from(SECRETS), st.text(max_size=6))
secret_objects = st.dictionaries(
    st.sampled_from(["password", "api_key", "pass%77ord", "note", "authorization", "x"]),
    secret_values,
    max_size=3,
)
secret_args = st.lists(
    st.one_of(secret_values, secret_objects, secret_objects.map(json.dumps)), max_size=3
)


@SETTINGS
@given(
    item=well_typed_items,
    args=st.lists(secret_args, max_size=3),
    levels=st.lists(st.sampled_from(["log", "error", "warn"]), min_size=3, max_size=3),
    url=st.one_of(st.none(), secret_values),
    headers=st.one_of(st.none(), secret_objects),
)
def test_generated_rows_alike(
    item: dict[str, Any],
    args: list[list[Any]],
    levels: list[str],
    url: str | None,
    headers: dict[str, str] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logs = [
        {"level": level, "message": message} for level, message in zip(levels, args, strict=False)
    ]
    with_secrets = {**base_item, "logs": logs, "outcome": item["outcome"]}
    request: dict[str, Any] = {"method": "GET", "url": url}
    if headers is not None:
        request["headers"] = headers
    with_secrets["event"] = {"request": request, "response": {"status": 500}}
    same([json.dumps(item).encode(), json.dumps(with_secrets).encode()], monkeypatch)


SYNTH = [m.value for m in itertools.islice(synth.messages(11, 1_764_374_400_000), 50)]


@SETTINGS
@given(
    index=st.integers(0, len(SYNTH) - 1),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=3)), min_size=1, max_size=4),
)
def test_mangled_messages_alike(
    index: int, edits: list[tuple[int, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes replaced, cut or inserted anywhere in a real-shaped message: the native rows are
    the transformer's, or declined; never an exception (a panic would stop the replica)."""
    raw = bytearray(SYNTH[index])
    for at, replacement in edits:
        at %= len(raw) + 1
        raw[at : at + len(replacement) % 2] = replacement
    same([bytes(raw)], monkeypatch)


@SETTINGS
@given(raw=st.binary(max_size=64))
def test_any_bytes_decline_or_agree(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    same([raw], monkeypatch)
