"""`POST /v1/tail-stream`: a streaming Tail Worker's event envelopes, one message per invocation.

Over real HTTP against the real Kafka, as tests/collector/test_collect.py does: what the
collector published is read back, keys and values byte for byte. The last test posts the real
runtime's capture (tests/fixtures/tail_stream/) the way a forwarder would, a few envelopes at a
time, and finds every invocation whole again, in order, under its own key.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.collector import tail_stream
from pipeline.collector.items import MAX_ITEM_BYTES
from pipeline.collector.rejection import Rejection
from pipeline.formats.decode import decoded
from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.collector.test_collect import (
    PARTITIONS,
    TOKEN,
    bearer,
    read_topic,
    running,
    topic_end,
)
from tests.conftest import ROOT

ROUTE = "/v1/tail-stream"
FIXTURE = ROOT / "tests" / "fixtures" / "tail_stream" / "workerd-2026-11-23.jsonl"
TS = "2026-12-06T13:09:08.206Z"


@pytest.fixture
async def stream_settings(settings: Settings) -> Settings:
    await ensure_topics(settings, {settings.topic: PARTITIONS})
    return replace(settings, collect_tokens=("another-token", TOKEN))


def envelope(invocation: str, sequence: int, event: dict[str, Any]) -> dict[str, Any]:
    """One event as the runtime delivers it and a forwarder posts it."""
    span = {"traceId": invocation[:32].ljust(32, "0")}
    if event["type"] != "onset":
        span["spanId"] = "f608535f2aa5cabd"
    return {
        "spanContext": span,
        "invocationId": invocation,
        "timestamp": TS,
        "sequence": sequence,
        "event": event,
    }


def onset(path: str) -> dict[str, Any]:
    return {
        "type": "onset",
        "executionModel": "stateless",
        "spanId": "f608535f2aa5cabd",
        "scriptTags": [],
        "info": {
            "type": "fetch",
            "method": "GET",
            "url": f"https://api.example.com{path}",
            "cfJson": {},
            "headers": [{"name": "user-agent", "value": "curl/8.5.0"}],
        },
    }


def log(text: str) -> dict[str, Any]:
    return {"type": "log", "level": "log", "message": [text]}


OUTCOME = {"type": "outcome", "outcome": "ok", "cpuTime": 0, "wallTime": 0}
RETURN = {"type": "return", "info": {"type": "fetch", "statusCode": 200}}


def invocation_events(invocation: str, path: str, lines: int) -> list[dict[str, Any]]:
    """A whole invocation: onset, `lines` logs, return, outcome."""
    events = [onset(path), *(log(f"{path} line {n}") for n in range(lines)), RETURN, OUTCOME]
    return [envelope(invocation, n, event) for n, event in enumerate(events)]


def message(envelopes: list[dict[str, Any]], script: str | None) -> bytes:
    """What the collector publishes for these envelopes of one invocation."""
    return orjson.dumps({"tailStream": envelopes, "script": script})


def in_offset_order(
    records: list[ConsumerRecord[bytes, bytes]],
) -> list[ConsumerRecord[bytes, bytes]]:
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def test_events_are_grouped_by_invocation_keyed_by_its_id_in_posted_order(
    stream_settings: Settings,
) -> None:
    """Three invocations interleaved, as a forwarder's buffer holds them: one message each,
    keyed by the invocation id, its envelopes in the order posted (not re-sorted: a forwarder
    posts the runtime's order), with the script of the query."""
    a = invocation_events("a" * 32, "/a", 2)
    b = invocation_events("b" * 32, "/b", 1)
    c = invocation_events("c" * 32, "/c", 0)
    a[1], a[2] = a[2], a[1]  # out of sequence within the group: kept as posted
    body = [a[0], b[0], a[1], c[0], b[1], a[2], c[1], a[3], b[2], b[3], c[2], a[4]]
    single = envelope("d" * 32, 0, onset("/d"))
    async with running(stream_settings) as client:
        response = await client.post(
            ROUTE, params={"script": "api-worker"}, content=orjson.dumps(body), headers=bearer()
        )
        assert (response.status_code, response.json()) == (202, {"published": 3}), response.text
        # One envelope, not in an array; no script; gzip'd.
        gzipped = {**bearer(), "Content-Encoding": "gzip"}
        response = await client.post(
            ROUTE, content=gzip.compress(orjson.dumps(single)), headers=gzipped
        )
        assert (response.status_code, response.json()) == (202, {"published": 1}), response.text
        metrics = (await client.get("/metrics")).text

    records = await read_topic(stream_settings, 4)
    published = {r.key: r.value for r in records}
    assert published == {
        b"a" * 32: message(a, "api-worker"),
        b"b" * 32: message(b, "api-worker"),
        b"c" * 32: message(c, "api-worker"),
        b"d" * 32: message([single], None),
    }
    for record in records:  # each message decodes to its events
        assert len(decoded(record.value).stream) == len(orjson.loads(record.value)["tailStream"])
    assert f'tailpipe_collect_items_total{{route="{ROUTE}"}} 4.0' in metrics
    assert (
        f'tailpipe_collect_requests_total{{method="POST",route="{ROUTE}",status="2xx"}} 2.0'
        in metrics
    )


async def test_the_script_is_checked_before_anything_is_published(
    stream_settings: Settings,
) -> None:
    body = orjson.dumps(invocation_events("e" * 32, "/e", 1))
    longest = "é" * 127 + "x"  # 255 bytes of UTF-8
    refused: list[tuple[tuple[tuple[str, str], ...], str]] = [
        ((("script", "é" * 128),), "256 bytes"),  # 128 characters, but 256 bytes
        ((("script", "w" * 256),), "256 bytes"),
        ((("script", ""),), "empty"),
        ((("script", "one"), ("script", "two")), "given 2 times"),
    ]
    async with running(stream_settings) as client:
        for params, problem in refused:
            response = await client.post(ROUTE, params=params, content=body, headers=bearer())
            assert response.status_code == 400, (params, response.text)
            answer = response.json()
            assert answer["field"] == "script", answer
            assert answer["error"].startswith("query: script: "), answer
            assert problem in answer["error"], answer
        assert await topic_end(stream_settings) == 0
        response = await client.post(
            ROUTE, params={"script": longest}, content=body, headers=bearer()
        )
        assert (response.status_code, response.json()) == (202, {"published": 1}), response.text
        metrics = (await client.get("/metrics")).text
    [record] = await read_topic(stream_settings, 1)
    assert orjson.loads(record.value)["script"] == longest
    assert 'tailpipe_collect_rejects_total{reason="invalid"} 4.0' in metrics


async def test_malformed_bodies_get_a_400_naming_the_item_and_field(
    stream_settings: Settings,
) -> None:
    good = invocation_events("f" * 32, "/f", 1)
    bad_sequence = {**good[2], "sequence": "three"}
    cases: list[tuple[bytes, dict[str, Any]]] = [
        (b"{not json", {"error": "body: not JSON"}),
        (b"", {"error": "body: not JSON"}),
        (b"42", {"error": "body: expected an array of event envelopes or one envelope"}),
        (orjson.dumps([good[0], "onset"]), {"error": "item 1: expected an event envelope"}),
        (
            orjson.dumps([good[0], {k: v for k, v in good[1].items() if k != "invocationId"}]),
            {"error": "item 1: invocationId: missing", "item": 1, "field": "invocationId"},
        ),
        (
            orjson.dumps([good[0], good[1], {**good[2], "invocationId": 7}]),
            {"error": "item 2: invocationId: expected a string", "item": 2},
        ),
        (
            orjson.dumps([{**good[0], "invocationId": ""}]),
            {"error": "item 0: invocationId: empty", "item": 0, "field": "invocationId"},
        ),
        (
            orjson.dumps([good[0], {**good[1], "invocationId": "x" * 129}]),
            {"error": "item 1: invocationId: 129 characters", "field": "invocationId"},
        ),
        # Refused by the decoder: named by the item of the request, not of the message.
        (
            orjson.dumps([*invocation_events("0" * 32, "/0", 0), good[0], good[1], bad_sequence]),
            {"error": "item 5: sequence: ", "item": 5, "field": "sequence"},
        ),
    ]
    async with running(stream_settings) as client:
        for body, wanted in cases:
            response = await client.post(ROUTE, content=body, headers=bearer())
            assert response.status_code == 400, (body[:80], response.text)
            answer = response.json()
            for key, value in wanted.items():
                if key == "error":
                    assert answer["error"].startswith(value), answer
                else:
                    assert answer[key] == value, answer
    assert await topic_end(stream_settings) == 0


async def test_a_large_invocation_is_split_into_consecutive_messages_under_the_limit(
    stream_settings: Settings,
) -> None:
    """Fourteen logs of 150 KB: more than a Kafka message holds. Cut into runs that fill a
    message each, same key, same order; an envelope too large alone is refused with 413."""
    invocation = "9" * 32
    events = invocation_events(invocation, "/bulk", 0)
    logs = [envelope(invocation, n + 1, log(f"{n:03} " + "x" * 150_000)) for n in range(14)]
    big = [events[0], *logs, events[1], events[2]]
    alone = envelope("8" * 32, 1, log("y" * (MAX_ITEM_BYTES + 1)))
    async with running(stream_settings) as client:
        response = await client.post(
            ROUTE, params={"script": "bulk"}, content=orjson.dumps(big), headers=bearer()
        )
        assert response.status_code == 202, response.text
        published = response.json()["published"]
        response = await client.post(
            ROUTE,
            content=orjson.dumps([envelope("8" * 32, 0, onset("/big")), alone]),
            headers=bearer(),
        )
        assert response.status_code == 413, response.text
        assert response.json()["item"] == 1
        assert response.json()["error"].startswith("item 1: ")

    records = in_offset_order(await read_topic(stream_settings, published))
    assert published == len(records) == 3  # 1 MB holds six of them
    assert {r.key for r in records} == {invocation.encode()}
    assert len({r.partition for r in records}) == 1
    runs = [orjson.loads(r.value) for r in records]
    assert [envelope for run in runs for envelope in run["tailStream"]] == big
    assert {run["script"] for run in runs} == {"bulk"}
    sizes = [len(r.value) for r in records]
    assert max(sizes) <= MAX_ITEM_BYTES
    for record, following in zip(records, runs[1:], strict=False):
        # Each message full: the next run's first envelope would not have fitted.
        assert len(record.value) + 1 + len(orjson.dumps(following["tailStream"][0])) > (
            MAX_ITEM_BYTES
        )


async def test_requests_without_a_known_token_are_refused(stream_settings: Settings) -> None:
    body = orjson.dumps(invocation_events("1" * 32, "/1", 1))
    async with running(stream_settings) as client:
        for headers in ({}, bearer("wrong-token"), {"x-tailpipe-token": "wrong-token"}):
            # A bad script too: the token is checked first, and nothing is said about the rest.
            response = await client.post(
                ROUTE, params={"script": ""}, content=body, headers=headers
            )
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await client.get(ROUTE, headers=bearer())).status_code == 405
        response = await client.post(ROUTE, content=body, headers={"x-tailpipe-token": TOKEN})
        assert (response.status_code, response.json()) == (202, {"published": 1})
    assert await topic_end(stream_settings) == 1


async def test_the_real_runtime_capture_posted_in_chunks_comes_out_whole_per_invocation(
    stream_settings: Settings,
) -> None:
    """Every envelope workerd delivered (20 invocations, 409 events, interleaved as they came),
    posted 7 at a time as a forwarder flushing its buffer would: each post publishes one message
    per invocation it touches, and each invocation's messages, read in order, are its events in
    the order of the capture. The lines are posted as the runtime wrote them: one holds a lone
    surrogate escape, which the collector keeps."""
    lines = FIXTURE.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]  # a lone surrogate kept, as orjson cannot
    assert len(events) == 409
    expected = 0
    async with running(stream_settings) as client:
        for start in range(0, len(lines), 7):
            chunk = lines[start : start + 7]
            body = b"[" + b",".join(chunk) + b"]"
            response = await client.post(
                ROUTE, params={"script": "producer"}, content=body, headers=bearer()
            )
            assert response.status_code == 202, response.text
            touched = {e["invocationId"] for e in events[start : start + 7]}
            assert response.json() == {"published": len(touched)}
            expected += len(touched)

    records = in_offset_order(await read_topic(stream_settings, expected))
    found: defaultdict[bytes, list[Any]] = defaultdict(list)
    partitions: defaultdict[bytes, set[int]] = defaultdict(set)
    for record in records:
        value = json.loads(record.value)
        assert value["script"] == "producer"
        assert {e["invocationId"].encode() for e in value["tailStream"]} == {record.key}
        assert len(decoded(record.value).stream) == len(value["tailStream"])
        found[record.key] += value["tailStream"]
        partitions[record.key].add(record.partition)
    wanted: defaultdict[bytes, list[Any]] = defaultdict(list)
    for event in events:
        wanted[event["invocationId"].encode()].append(event)
    assert len(wanted) == 20
    assert found == wanted
    assert all(len(p) == 1 for p in partitions.values())
    for group in found.values():
        assert [e["sequence"] for e in group] == list(range(len(group)))
        assert (group[0]["event"]["type"], group[-1]["event"]["type"]) == ("onset", "outcome")


def test_a_script_is_taken_from_the_query_once_and_at_most_255_bytes() -> None:
    """The query alone, without a request: `parser` refuses before any body is read."""
    assert tail_stream.parser([("other", "x")]) is not None
    for query, field in (
        ([("script", "a" * 256)], "script"),
        ([("script", "")], "script"),
        ([("script", "a"), ("script", "a")], "script"),
    ):
        with pytest.raises(Rejection) as refused:
            tail_stream.parser(query)
        assert refused.value.status == 400
        assert refused.value.detail["field"] == field
