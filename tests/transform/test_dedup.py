"""Identities: the same however a sender re-serialises an item, different for different items;
and a batch built again without its duplicates counts them nowhere."""

from __future__ import annotations

import copy
import itertools
import json
import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats.identity import item_key
from pipeline.kafka import synth
from pipeline.transform.batch import Batch, Identity
from pipeline.transform.dedup import INVOCATION, SPAN, digest, is_digest_key
from pipeline.transform.extract import Extractor
from pipeline.transform.inspect import inspect
from pipeline.transform.transformer import Transformer
from tests.conftest import ROOT
from tests.formats.test_identity import shuffled

OTLP = ROOT / "tests" / "fixtures" / "otlp"
START = 1_764_374_400_000


def transformer() -> Transformer:
    return Transformer(Extractor.from_files(), dedup=True)


def identities(*messages: tuple[bytes | None, bytes]) -> list[Identity]:
    """The identities of the messages, added to one batch at offsets 0, 1, ..."""
    batch = Batch()
    t = transformer()
    for offset, (key, value) in enumerate(messages):
        t.add(batch, "t", 0, offset, START, key, value)
    return [i for part in batch.parts.values() for i in part.identities]


def as_a_producer_sends(item: dict[str, Any], text: bytes) -> tuple[bytes, bytes]:
    """Keyed as every tailpipe producer keys a message (`formats.identity`)."""
    return item_key(orjson.loads(text)), text


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_reserialised_item_has_its_first_copys_identity(seed: int) -> None:
    rng = random.Random(seed)
    [message] = [m for m in itertools.islice(synth.messages(seed, START), 3) if not m.poison][:1]
    item = orjson.loads(message.value)
    again = json.dumps(shuffled(item, rng), indent=rng.choice([None, 1, 2])).encode()
    [first] = identities(as_a_producer_sends(item, message.value))
    [retry] = identities(as_a_producer_sends(item, again))
    assert (first.ts, first.digest) == (retry.ts, retry.digest)


def test_different_items_differ_even_under_one_foreign_key() -> None:
    """A producer keying by something shared (a trace id) must not lose items that differ in
    script or event type, and items of a batch message differ by their place in it."""
    items = [m for m in itertools.islice(synth.messages(3, START, step_ms=0), 40) if not m.poison]
    shared = b"4bf92f3577b34da6a3ce929d0e0e4736"
    assert is_digest_key(shared)
    scripts = {orjson.loads(m.value)["scriptName"] for m in items}
    keyed = identities(*((shared, m.value) for m in items))
    assert len({(i.ts, i.digest) for i in keyed}) >= len(scripts) > 1
    batched = identities((None, orjson.dumps([orjson.loads(m.value) for m in items[:5]])))
    assert [i.item for i in batched] == [0, 1, 2, 3, 4]
    assert len({i.digest for i in batched}) == 5


def test_an_item_without_a_digest_key_is_its_message() -> None:
    [message] = [m for m in itertools.islice(synth.messages(5, START), 2) if not m.poison][:1]
    [a] = identities((b"my-script", message.value))
    [b] = identities((None, message.value))
    assert a.digest == b.digest == digest(b"message", _blake(message.value), "0")
    assert not is_digest_key(b"my-script")
    assert not is_digest_key(b"4BF92F3577B34DA6A3CE929D0E0E4736")  # not as producers write it


def _blake(value: bytes) -> bytes:
    from hashlib import blake2b

    return blake2b(value, digest_size=16).digest()


def test_otlp_invocations_and_spans_by_their_ids() -> None:
    logs = orjson.loads((OTLP / "cloudflare_fetch.json").read_bytes())
    trace = (OTLP / "cloudflare_trace.json").read_bytes()
    [invocation] = identities((None, orjson.dumps(logs)))
    # The retry: another serialisation, under another key.
    [retried] = identities((b"x", json.dumps(logs, indent=2).encode()))
    assert (invocation.ts, invocation.digest) == (retried.ts, retried.digest)
    assert invocation.kind == INVOCATION
    spans = identities((None, trace))
    assert {i.kind for i in spans} == {SPAN}
    assert len({i.digest for i in spans}) == len(spans) == 4
    assert identities((b"other", trace)) == spans


def test_a_fragment_is_not_its_invocation() -> None:
    logs = orjson.loads((OTLP / "cloudflare_fetch.json").read_bytes())
    records = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    invocation_id = {"key": "faas.invocation_id", "value": {"stringValue": "9c1e" * 8}}
    for record in records:
        record["attributes"].append(invocation_id)
    head, tail, other_tail = copy.deepcopy(logs), copy.deepcopy(logs), copy.deepcopy(logs)
    head["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[:3]
    tail["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[3:]
    other_tail["resourceLogs"][0]["scopeLogs"][0]["logRecords"] = records[2:3]
    found = identities(*((None, orjson.dumps(d)) for d in (head, tail, other_tail)))
    assert len({i.digest for i in found}) == 3


def test_a_batch_built_again_without_duplicates_counts_them_nowhere() -> None:
    messages = [m for m in itertools.islice(synth.messages(9, START), 30) if not m.poison]
    t = transformer()
    whole, deduped = Batch(), Batch()
    for offset, m in enumerate(messages):
        t.add(whole, "t", 0, offset, START, m.key, m.value)
    for offset, m in enumerate([*messages, *messages[:4]]):
        t.add(deduped, "t", 0, offset, START, m.key, m.value)
    part = deduped.parts["t", 0]
    seen: set[tuple[Any, int]] = set()
    again = set()
    for i in part.identities:
        if (i.ts, i.digest) in seen:
            again.add((i.offset, i.kind, i.item))
        seen.add((i.ts, i.digest))
    assert len(again) == 4
    t.rebuild(deduped, {}, {("t", 0): again})
    part, expected = deduped.parts["t", 0], whole.parts["t", 0]
    assert len(part.events) == len(expected.events)
    assert len(part.logs) == len(expected.logs)
    assert part.rollups.with_totals() == expected.rollups.with_totals()
    assert part.messages == len(messages) + 4  # their offsets are still covered
    assert sorted((i.ts, i.digest) for i in part.identities) == sorted(
        (i.ts, i.digest) for i in expected.identities
    )


def test_inspect_shows_identities_and_leaves_a_repeat_out() -> None:
    [message] = [m for m in itertools.islice(synth.messages(11, START), 2) if not m.poison][:1]
    again = json.dumps(shuffled(orjson.loads(message.value), random.Random(1))).encode()
    lines = list(inspect(transformer(), [message.value, again], START))
    assert [line["identity"]["kind"] for line in lines if "identity" in line] == ["invocation"]
    assert [line for line in lines if "duplicate" in line] == [
        {"line": 2, "duplicate": "invocation", "item": 0, "of_line": 1}
    ]
    assert {line["line"] for line in lines if line.get("table") == "tail_events"} == {1}
    assert lines[-1]["duplicates"] == 1
