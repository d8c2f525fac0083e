"""`tailpipe loadgen`: deterministic synthetic events, round-tripped through the real Kafka."""

from __future__ import annotations

import itertools
from collections import defaultdict

import orjson

from pipeline import kafka, synth
from pipeline.settings import Settings
from tests.conftest import env_of, read_topic, tailpipe

START = 1_764_374_400_000


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = [m.value for m in itertools.islice(synth.messages(9, START), 500)]
    again = [m.value for m in itertools.islice(synth.messages(9, START), 500)]
    other = [m.value for m in itertools.islice(synth.messages(10, START), 500)]
    assert first == again
    assert first != other


def test_mix_is_realistic() -> None:
    stream = list(itertools.islice(synth.messages(4, START, poison_ratio=0.02), 20_000))
    items = [orjson.loads(m.value) for m in stream if not m.poison]
    poison = sum(m.poison for m in stream)
    assert 300 < poison < 500  # about 2%
    outcomes = {i["outcome"] for i in items}
    assert {"ok", "exception", "exceededCpu"} <= outcomes
    assert all(i["exceptions"][0]["stack"] for i in items if i["outcome"] == "exception")
    text = b"\n".join(m.value for m in stream)
    for needle in (b"GET /repos/", b"ratelimit remaining=", b"input_tokens", b"scan completed"):
        assert needle in text
    assert b"ghp_" in text or b"sk-ant-" in text  # secrets the pipeline must redact
    assert 600 < sum(len(m.value) for m in stream) / len(stream) < 1000


async def test_round_trip_through_kafka(settings: Settings) -> None:
    await kafka.ensure_topics(settings, {settings.topic: 3})
    n = 3000
    result = tailpipe(
        "loadgen",
        "--count", str(n),
        "--seed", "5",
        "--start-ms", str(START),
        "--poison-ratio", "0.05",
        env=env_of(settings),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = list(itertools.islice(synth.messages(5, START, poison_ratio=0.05), n))
    assert f"sent {n} messages ({sum(m.poison for m in expected)} malformed)" in result.stdout
    received = await read_topic(settings, n)
    assert len(received) == n
    assert sorted(v for _, v in received) == sorted(m.value for m in expected)
    # One script's events keep their order: keyed, so one partition each.
    by_key: dict[bytes | None, list[bytes]] = defaultdict(list)
    for key, value in received:
        by_key[key].append(value)
    for key, values in by_key.items():
        if key is not None:
            assert values == [m.value for m in expected if m.key == key]
