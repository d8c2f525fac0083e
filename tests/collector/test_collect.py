"""`tailpipe collect` over real HTTP (uvicorn on a free port) against the real Kafka.

Each test gets its own topic; what the collector published is read back with a consumer, and
"nothing published" means the topic's end offsets are still 0. The outage test runs its own
broker (tests/support/broker.py) so it can kill it without disturbing the shared one.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import importlib.metadata
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer.sender import Sender
from aiokafka.structs import ConsumerRecord
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pipeline.collector import sink
from pipeline.collector.app import create_app, serve
from pipeline.errors import SettingsError
from pipeline.formats.decode import decode
from pipeline.formats.identity import item_key
from pipeline.kafka.clients import client_options, ensure_topics
from pipeline.settings import Settings
from tests.conftest import ROOT, env_of, free_port
from tests.support.broker import Broker

TOKEN = "tok-" + uuid.uuid4().hex
PARTITIONS = 3
BASE_MS = 1_764_000_000_000


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def trace_item(script: str | None, n: int) -> dict[str, Any]:
    """A fetch invocation as a Tail Worker's `events` carries it."""
    ts = BASE_MS + n
    return {
        "scriptName": script,
        "entrypoint": "default",
        "event": {
            "request": {
                "url": f"https://{script or 'anon'}.example.com/items/{n}",
                "method": "GET",
                "headers": {"user-agent": "curl/8.5.0", "cookie": "REDACTED"},
            },
            "response": {"status": 200},
        },
        "eventTimestamp": ts,
        "logs": [{"timestamp": ts, "level": "log", "message": [f"handled {n}", {"ok": True}]}],
        "exceptions": [],
        "diagnosticsChannelEvents": [],
        "outcome": "ok",
        "executionModel": "stateless",
        "truncated": False,
        "cpuTime": 1,
        "wallTime": 4,
    }


def logpush_record(script: str, n: int) -> dict[str, Any]:
    """A `workers_trace_events` record as a Logpush job writes it."""
    ts = BASE_MS + n
    return {
        "CPUTimeMs": 2,
        "DispatchNamespace": "",
        "Entrypoint": "",
        "Event": {
            "RayID": f"8f{n:014x}",
            "Request": {"URL": f"https://{script}.example.com/{n}", "Method": "POST"},
            "Response": {"Status": 201},
        },
        "EventTimestampMs": ts,
        "EventType": "fetch",
        "Exceptions": [],
        "Logs": [{"Level": "info", "Message": [f"stored {n}"], "TimestampMs": ts}],
        "Outcome": "ok",
        "ScriptName": script,
        "ScriptTags": [],
        "ScriptVersion": {"ID": "2d1bd0b6-0000-4000-8000-000000000001", "Message": "", "Tag": ""},
        "WallTimeMs": 9,
    }


async def eventually(check: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> None:
    """Poll `check` until it passes; fail naming `what` after `deadline_s`."""
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{what} within {deadline_s} s")


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The collector on a free port, ready (Kafka connected); a client pointed at it."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def ready() -> bool:
                if task.done():
                    task.result()  # raises what stopped the server
                    pytest.fail("the collector stopped during start-up")
                if not server.started:
                    return False
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, 30, "collector ready")
            yield client
    finally:
        server.should_exit = True
        await task


async def topic_end(settings: Settings) -> int:
    """How many messages the topic holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends.values())


async def read_topic(settings: Settings, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message of the topic, once `count` arrived; fails if more than `count` are there."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        total = sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
    assert total == count, f"the topic holds {total} messages, expected {count}"
    return records


@pytest.fixture
async def collect_settings(settings: Settings) -> Settings:
    await ensure_topics(settings, {settings.topic: PARTITIONS})
    return replace(settings, collect_tokens=("another-token", TOKEN))


async def test_tail_events_arrive_intact_keyed_by_identity(
    collect_settings: Settings,
) -> None:
    scripts = ["api", "auth", "api", None, "billing", "api", "auth"]
    events = [trace_item(script, n) for n, script in enumerate(scripts)]
    single = trace_item("cron", 99)
    async with running(collect_settings) as client:
        response = await client.post("/v1/tail", content=orjson.dumps(events), headers=bearer())
        assert response.status_code == 202, response.text
        assert response.json() == {"published": len(events)}
        response = await client.post("/v1/tail", json=single, headers=bearer())
        assert (response.status_code, response.json()) == (202, {"published": 1})
        metrics = (await client.get("/metrics")).text

    records = await read_topic(collect_settings, len(events) + 1)
    assert sorted(r.value for r in records) == sorted(map(orjson.dumps, [*events, single]))
    for record in records:  # intact, each keyed by its identity
        assert record.key == item_key(orjson.loads(record.value))
    assert 'tailpipe_collect_items_total{route="/v1/tail"} 8.0' in metrics
    assert (
        'tailpipe_collect_requests_total{method="POST",route="/v1/tail",status="2xx"} 2.0'
        in metrics
    )
    assert "tailpipe_collect_publish_seconds_count 2.0" in metrics


async def test_a_retried_item_lands_where_its_first_copy_did(collect_settings: Settings) -> None:
    """A sender's retry re-serialises: other key order, whitespace, other batch companions. The
    key, and so the partition, stays that of the first copy; and one busy script spreads over
    every partition instead of loading one replica."""
    busy = [trace_item("busy", n) for n in range(60)]
    retried = busy[7]
    reordered = dict(reversed(list(retried.items())))
    async with running(collect_settings) as client:
        response = await client.post("/v1/tail", content=orjson.dumps(busy), headers=bearer())
        assert (response.status_code, response.json()) == (202, {"published": 60})
        again = json.dumps([trace_item("other", 1), reordered], indent=2).encode()
        response = await client.post("/v1/tail", content=again, headers=bearer())
        assert (response.status_code, response.json()) == (202, {"published": 2})

    records = await read_topic(collect_settings, 62)
    copies = [r for r in records if orjson.loads(r.value) == retried]
    assert len(copies) == 2
    assert copies[0].key == copies[1].key == item_key(retried)
    assert copies[0].partition == copies[1].partition
    assert {r.partition for r in records if orjson.loads(r.value)["scriptName"] == "busy"} == set(
        range(PARTITIONS)
    )


async def test_a_string_cut_inside_an_emoji_is_taken_not_refused(
    collect_settings: Settings,
) -> None:
    """A Worker that slices a string inside an emoji logs a lone surrogate, which
    `JSON.stringify` writes as `\\ud83d`. The body was refused with 400, so the forwarder
    dropped the whole batch. Now it is published with the escape kept, for the consumer's
    decoder to repair and count (`tailpipe_sanitized_total`)."""
    item = trace_item("api", 1)
    item["logs"][0]["message"] = ["cut \ufffd here"]
    body = orjson.dumps([item, trace_item("api", 2)]).replace("\ufffd".encode(), b"\\ud83d")
    assert b"\\ud83d" in body
    async with running(collect_settings) as client:
        response = await client.post("/v1/tail", content=body, headers=bearer())
        assert (response.status_code, response.json()) == (202, {"published": 2})
    first, second = sorted(await read_topic(collect_settings, 2), key=lambda r: r.value)
    assert b"\\ud83d" in first.value
    [invocation] = decode(first.value)
    assert invocation.logs[0].text == "cut \ufffd here"
    assert invocation.sanitized == ("message",)
    assert orjson.loads(second.value) == trace_item("api", 2)


async def test_logpush_batches_arrive_line_for_line(collect_settings: Settings) -> None:
    lines = [orjson.dumps(logpush_record(["api", "www"][n % 2], n)) for n in range(6)]
    batch = b"\n".join(lines[:4]) + b"\n"
    async with running(collect_settings) as client:
        gzipped = {**bearer(), "Content-Encoding": "gzip"}
        response = await client.post("/v1/logpush", content=gzip.compress(batch), headers=gzipped)
        assert (response.status_code, response.json()) == (202, {"published": 4}), response.text
        # Gzip recognised by its magic bytes alone, token in the secret header as Logpush sends
        # it (`header_x-tailpipe-token=` in destination_conf), CRLF line ends.
        plain = gzip.compress(b"\r\n".join(lines[4:]))
        response = await client.post(
            "/v1/logpush", content=plain, headers={"X-Tailpipe-Token": TOKEN}
        )
        assert (response.status_code, response.json()) == (202, {"published": 2}), response.text

    records = await read_topic(collect_settings, len(lines))
    assert sorted(r.value for r in records) == sorted(lines)
    for record in records:
        assert record.key == item_key(orjson.loads(record.value))


async def test_logpush_destination_check_is_accepted_and_publishes_nothing(
    collect_settings: Settings,
) -> None:
    probe = gzip.compress(b'{"content":"tests"}')
    async with running(collect_settings) as client:
        response = await client.post(
            "/v1/logpush", content=probe, headers={"x-tailpipe-token": TOKEN}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"published": 0, "validation": True}
        unauthorised = await client.post("/v1/logpush", content=probe)
        assert unauthorised.status_code == 401
    assert await topic_end(collect_settings) == 0


async def test_requests_without_a_known_token_are_refused(collect_settings: Settings) -> None:
    body = orjson.dumps([trace_item("api", 1)])
    attempts = [
        {},
        bearer("wrong-token"),
        bearer(TOKEN[:-1]),
        {"Authorization": f"Basic {TOKEN}"},
        {"x-tailpipe-token": "wrong-token"},
        {"x-other-header": TOKEN},
    ]
    async with running(collect_settings) as client:
        for headers in attempts:
            response = await client.post("/v1/tail", content=body, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert "token" in response.json()["error"]
        metrics = (await client.get("/metrics")).text
    assert f'tailpipe_collect_rejects_total{{reason="unauthorized"}} {len(attempts)}.0' in metrics
    assert await topic_end(collect_settings) == 0


async def test_tokens_of_any_length_are_taken_and_near_misses_refused(settings: Settings) -> None:
    """The collector's check is pipeline/web/tokens.py's: a token of 1 byte or of 200, in either
    header, is taken; anything a byte off, shorter or longer, is refused."""
    await ensure_topics(settings, {settings.topic: PARTITIONS})
    tokens = ("a", "b" * 200, TOKEN)
    configured = replace(settings, collect_tokens=tokens)
    misses = ("A", "aa", "b" * 199, "b" * 201, TOKEN[:-1], TOKEN + "0")
    async with running(configured) as client:
        n = 0
        for token in tokens:
            for headers in (bearer(token), {"x-tailpipe-token": token}):
                response = await client.post("/v1/tail", json=trace_item("api", n), headers=headers)
                assert response.status_code == 202, (token, headers)
                n += 1
        for miss in misses:
            for headers in (bearer(miss), {"x-tailpipe-token": miss}):
                response = await client.post("/v1/tail", json=trace_item("api", 0), headers=headers)
                assert response.status_code == 401, headers
    assert await topic_end(configured) == 2 * len(tokens)


async def test_metrics_count_and_time_every_request_by_route_template(
    collect_settings: Settings,
) -> None:
    """`tailpipe_collect_requests_total` and `_request_duration_seconds`: every route and the
    others under `other`, methods and statuses from fixed sets, all exported at 0 first."""
    async with running(collect_settings) as client:
        first = (await client.get("/metrics")).text
        for n in range(3):
            assert (
                await client.post("/v1/tail", json=trace_item("api", n), headers=bearer())
            ).status_code == 202
        lines = "\n".join(orjson.dumps(logpush_record("api", n)).decode() for n in range(4))
        logpush = await client.post("/v1/logpush", content=lines, headers=bearer())
        assert logpush.status_code == 202
        assert (await client.post("/v1/tail", content=b"{", headers=bearer())).status_code == 400
        assert (await client.get("/v1/tail")).status_code == 405
        for n in range(40):  # distinct paths and methods: no new series for any of them
            method = ["GET", "POST", "PURGE", "PROPFIND"][n % 4]
            assert (await client.request(method, f"/wp-admin/{n}.php")).status_code == 404
        metrics = (await client.get("/metrics")).text
    assert await topic_end(collect_settings) == 3 + 4

    def value(text: str, series: str) -> float:
        [line] = [x for x in text.splitlines() if x.startswith(series + " ")]
        return float(line.rsplit(" ", 1)[1])

    requests = "tailpipe_collect_requests_total"
    seconds = "tailpipe_collect_request_duration_seconds"
    for route, method in (("/v1/tail", "POST"), ("/v1/logpush", "POST"), ("/healthz", "GET"),
                          ("/readyz", "GET"), ("/metrics", "GET")):  # fmt: skip
        for status in ("2xx", "4xx", "5xx"):
            labels = f'{{method="{method}",route="{route}",status="{status}"}}'
            assert value(first, requests + labels) == 0 or route in ("/readyz", "/metrics")
            assert f"{seconds}_count{labels}" in first
    tail = 'method="POST",route="/v1/tail"'
    assert value(metrics, f'{requests}{{{tail},status="2xx"}}') == 3
    assert value(metrics, f'{requests}{{{tail},status="4xx"}}') == 1
    assert value(metrics, f'{seconds}_count{{{tail},status="2xx"}}') == 3
    assert value(metrics, f'{seconds}_bucket{{le="30.0",{tail},status="2xx"}}') == 3
    assert value(metrics, f'{seconds}_sum{{{tail},status="2xx"}}') > 0
    logpush_2xx = f'{requests}{{method="POST",route="/v1/logpush",status="2xx"}}'
    assert value(metrics, logpush_2xx) == 1
    assert value(metrics, f'{requests}{{method="GET",route="/v1/tail",status="4xx"}}') == 1
    assert value(metrics, 'tailpipe_collect_items_total{route="/v1/logpush"}') == 4
    assert value(metrics, 'tailpipe_collect_rejects_total{reason="malformed"}') == 1
    others = {
        (m, value(metrics, f'{requests}{{method="{m}",route="other",status="4xx"}}'))
        for m in ("GET", "POST", "other")
    }
    assert others == {("GET", 10), ("POST", 10), ("other", 20)}
    assert "wp-admin" not in metrics
    assert "PURGE" not in metrics


async def test_oversized_bodies_are_refused_raw_and_decompressed(
    collect_settings: Settings,
) -> None:
    limit = 256 * 1024
    small = replace(collect_settings, collect_max_body_bytes=limit)
    events = [trace_item("api", n) for n in range(400)]  # ~230 KiB: fits
    big = orjson.dumps(events * 2)  # ~460 KiB

    async def streamed() -> AsyncIterator[bytes]:  # chunked: no Content-Length to go by
        for start in range(0, len(big), 16 * 1024):
            yield big[start : start + 16 * 1024]

    bomb = gzip.compress(b"\n" * (64 << 20), compresslevel=9)  # 64 MiB of newlines, ~64 KiB
    assert len(bomb) < limit
    async with running(small) as client:
        response = await client.post("/v1/tail", content=big, headers=bearer())
        assert response.status_code == 413, response.text
        assert "Content-Length" in response.json()["error"]
        response = await client.post("/v1/tail", content=streamed(), headers=bearer())
        assert response.status_code == 413, response.text
        assert "request body" in response.json()["error"]
        gzipped = {**bearer(), "Content-Encoding": "gzip"}
        response = await client.post("/v1/logpush", content=bomb, headers=gzipped)
        assert response.status_code == 413, response.text
        assert "decompressed" in response.json()["error"]
        # The connection and the collector are fine afterwards.
        fits = orjson.dumps(events)
        assert len(fits) < limit
        response = await client.post("/v1/tail", content=fits, headers=bearer())
        assert (response.status_code, response.json()) == (202, {"published": 400})
        metrics = (await client.get("/metrics")).text
    assert 'tailpipe_collect_rejects_total{reason="too_large"} 3.0' in metrics
    assert await topic_end(small) == 400


async def test_malformed_bodies_get_a_clear_400_and_publish_nothing(
    collect_settings: Settings,
) -> None:
    good = trace_item("api", 1)
    bad_field = {**trace_item("api", 2), "outcome": 42}
    line = orjson.dumps(logpush_record("api", 1))
    cases: list[tuple[str, bytes, dict[str, str], dict[str, Any]]] = [
        ("/v1/tail", b"{not json", {}, {"error": "body: not JSON"}),
        ("/v1/tail", b"", {}, {"error": "body: not JSON"}),
        ("/v1/tail", b"[1, 2]", {}, {"error": "item 0: expected a trace item", "item": 0}),
        (
            "/v1/tail",
            orjson.dumps([good, good, bad_field]),
            {},
            {"error": "item 2: outcome: ", "item": 2, "field": "outcome"},
        ),
        ("/v1/logpush", line + b"\n{oops\n" + line, {}, {"error": "line 2: not JSON", "line": 2}),
        ("/v1/logpush", line + b"\n\n[1]", {}, {"error": "line 3: expected a JSON object"}),
        ("/v1/logpush", b"\n \n", {}, {"error": "body: no NDJSON records"}),
        ("/v1/logpush", gzip.compress(line)[:-12], {}, {"error": "body: the gzip stream"}),
        (
            "/v1/logpush",
            line,
            {"Content-Encoding": "gzip"},
            {"error": "body: not valid gzip"},
        ),
    ]
    async with running(collect_settings) as client:
        for route, body, headers, wanted in cases:
            response = await client.post(route, content=body, headers={**bearer(), **headers})
            assert response.status_code == 400, (route, body[:60], response.text)
            answer = response.json()
            for key, value in wanted.items():
                if key == "error":
                    assert answer["error"].startswith(value), answer
                else:
                    assert answer[key] == value, answer
        response = await client.post(
            "/v1/tail", content=b"[]", headers={**bearer(), "Content-Encoding": "br"}
        )
        assert response.status_code == 415
    assert await topic_end(collect_settings) == 0


async def test_kafka_outage_answers_503_and_the_retry_lands_after_it_returns(
    settings: Settings, tmp_path: Path
) -> None:
    broker = Broker(tmp_path)
    await broker.start()
    try:
        own = replace(settings, kafka_bootstrap=broker.bootstrap, collect_tokens=(TOKEN,))
        await ensure_topics(own, {own.topic: PARTITIONS})
        before = [trace_item(f"s{n % 3}", n) for n in range(5)]
        during = [trace_item(f"s{n % 3}", n) for n in range(5, 10)]
        async with running(own) as client:
            response = await client.post("/v1/tail", json=before, headers=bearer())
            assert response.status_code == 202, response.text

            broker.kill()
            started = time.monotonic()
            response = await client.post("/v1/tail", json=during, headers=bearer())
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "5"
            assert "Kafka unavailable" in response.json()["error"]
            assert time.monotonic() - started < 15  # bounded, never a hang

            async def not_ready() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await eventually(not_ready, 30, "/readyz turning 503 while Kafka is down")
            response = await client.post("/v1/tail", json=during, headers=bearer())
            assert response.status_code == 503  # still down: refused, not held

            await broker.start()
            answers: list[int] = []

            async def retried() -> bool:  # the sender retrying, as the Tail Worker does
                answer = await client.post("/v1/tail", json=during, headers=bearer())
                answers.append(answer.status_code)
                return answer.status_code == 202

            await eventually(retried, 60, "the retried request accepted after Kafka returned")
            assert set(answers) <= {202, 503}
            assert (await client.get("/readyz")).status_code == 200
            metrics = (await client.get("/metrics")).text
        assert 'tailpipe_collect_rejects_total{reason="unavailable"}' in metrics

        records = await read_topic(own, len(before) + len(during))
        assert sorted(r.value for r in records) == sorted(map(orjson.dumps, before + during))
    finally:
        broker.kill()


async def test_a_missing_topic_keeps_it_unready_with_the_reason(settings: Settings) -> None:
    absent = replace(settings, collect_tokens=(TOKEN,))  # its topic was never created
    app = create_app(absent)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def explained() -> bool:
                if not server.started:
                    return False
                answer = await client.get("/readyz")
                assert answer.status_code == 503
                return "does not exist" in answer.json()["problem"]

            await eventually(explained, 30, "/readyz naming the missing topic")
            response = await client.post("/v1/tail", json=[trace_item("api", 1)], headers=bearer())
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert absent.topic in response.json()["error"]
            assert (await client.get("/healthz")).status_code == 200
    finally:
        server.should_exit = True
        await task


async def test_refuses_to_start_without_tokens(settings: Settings) -> None:
    open_collector = replace(settings, collect_tokens=())
    with pytest.raises(SettingsError, match="TAILPIPE_COLLECT_TOKENS"):
        create_app(open_collector)
    with pytest.raises(SettingsError, match="TAILPIPE_COLLECT_TOKENS"):
        serve(open_collector)


async def test_serve_runs_until_sigterm_and_returns_0(collect_settings: Settings) -> None:
    port = free_port()
    env = {
        **os.environ,
        **env_of(collect_settings),
        "TAILPIPE_COLLECT_PORT": str(port),
        "TAILPIPE_COLLECT_TOKENS": TOKEN,
    }
    code = (
        "import sys; from pipeline.collector.app import serve; from pipeline.settings import load; "
        "sys.exit(serve(load(), host='127.0.0.1'))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                if process.returncode is not None:
                    output = await process.stdout.read() if process.stdout else b""
                    pytest.fail(f"serve() exited {process.returncode}: {output.decode()}")
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, 30, "the served collector ready")
            response = await client.post("/v1/tail", json=[trace_item("api", 1)], headers=bearer())
            assert response.status_code == 202
            assert (await client.get("/healthz")).json() == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert await topic_end(collect_settings) == 1


# -- dropping a producer: aborted through aiokafka's internals, pinned and checked --------------


def test_aiokafka_is_pinned_to_the_releases_whose_internals_the_collector_uses() -> None:
    """collector/sink.py aborts a dropped producer through aiokafka internals (`_sender`,
    `_closed`): the versions allowed are the ones checked to have them (0.12 to 0.14), and a
    release outside them is installed only by changing the pin, after the tests below pass."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [requirement] = [r for r in project["dependencies"] if re.match(r"aiokafka\b", r)]
    allowed = SpecifierSet(requirement.removeprefix("aiokafka"))
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in allowed), (
        f"{requirement}: no upper bound, so a release that renames the internals gets installed"
    )
    assert Version(importlib.metadata.version("aiokafka")) in allowed


async def test_the_aiokafka_internals_the_collector_aborts_through_mean_what_it_needs() -> None:
    """What sink._close relies on, without a broker: the attributes exist, `_closed` is what
    `stop()` and the finalizer go by. (That cancelling `_sender` stops delivery is checked with
    a broker by the next test.)"""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(str(context["message"])))
    try:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", enable_idempotence=True)
        assert sink._abortable(producer)
        assert isinstance(producer._sender, Sender)
        assert inspect.iscoroutinefunction(producer._sender.close)
        assert producer._sender.sender_task is None  # not started
        assert producer._closed is False

        # A producer marked closed: stop() does nothing (no flush, no second close) ...
        closing = producer.client.close
        calls: list[str] = []

        async def spy() -> None:
            calls.append("close")

        producer.client.close = spy
        producer._closed = True
        await producer.stop()
        assert calls == []
        await closing()
        # ... and its finalizer reports nothing, while it does for one that is not.
        del producer
        gc.collect()
        assert reported == []
        other = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        await other.client.close()
        del other
        gc.collect()
        assert any("Unclosed AIOKafkaProducer" in message for message in reported), reported
    finally:
        loop.set_exception_handler(None)


async def test_a_dropped_producer_is_aborted_never_flushed(
    settings: Settings, tmp_path: Path
) -> None:
    """The collector's promise for the items a dropped producer holds (answered 503, so their
    senders post them again): dropping it does not wait for Kafka, and none of them is ever
    delivered, not even once Kafka is back. A flushing close fails both."""
    broker = Broker(tmp_path)
    await broker.start()
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(str(context["message"])))
    try:
        own = replace(settings, kafka_bootstrap=broker.bootstrap)
        await ensure_topics(own, {own.topic: PARTITIONS})
        producer = await sink.KafkaSink(own)._open()
        await (await producer.send(own.topic, b"before"))
        broker.kill()
        held = [await producer.send(own.topic, f"held {n}".encode()) for n in range(3)]
        await asyncio.sleep(1)  # its sender is retrying them meanwhile

        started = time.monotonic()
        await sink._close(producer)
        assert time.monotonic() - started < 2, "dropping a producer waited for Kafka"
        assert producer._sender.sender_task.done()
        assert not any(f.done() and not f.cancelled() and not f.exception() for f in held)

        await broker.start()
        fresh = await sink.KafkaSink(own)._open()
        try:
            await (await fresh.send(own.topic, b"after"))
            await asyncio.sleep(2)  # were the old sender alive, it would deliver by now
        finally:
            await sink._close(fresh)
        records = await read_topic(own, 2)  # fails if more are there
        assert sorted(r.value for r in records) == [b"after", b"before"]
        del producer, fresh
        gc.collect()
        assert not [m for m in reported if "Unclosed" in m or "destroyed" in m], reported
    finally:
        loop.set_exception_handler(None)
        broker.kill()


async def test_an_aiokafka_without_those_internals_is_reported_not_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A release without them would turn the abort into a flush: the collector says so (once
    per process, as an error) instead of quietly weakening its promise, and still closes it."""

    class Opaque:
        """A producer as such a release would make one: `stop()`, no `_sender` or `_closed`."""

        stopped = 0

        async def stop(self) -> None:
            self.stopped += 1

    producers = [Opaque(), Opaque()]
    assert not sink._abortable(producers[0])
    sink._report_unabortable.cache_clear()
    try:
        with caplog.at_level(logging.ERROR, logger="tailpipe.collect"):
            for producer in producers:
                await sink._close(producer)
    finally:
        sink._report_unabortable.cache_clear()
    assert [p.stopped for p in producers] == [1, 1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert "aiokafka" in errors[0]
    assert "stored twice" in errors[0]
