"""`tailpipe produce` round-trips wrangler output and NDJSON through the real Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from pipeline.formats.decode import decode
from pipeline.formats.identity import item_key
from pipeline.kafka import clients
from pipeline.settings import Settings
from tests.conftest import ROOT, env_of, read_topic, tailpipe

ITEMS: list[dict[str, Any]] = [
    {"scriptName": "alpha", "outcome": "ok", "eventTimestamp": 1764374400000 + i, "logs": []}
    for i in range(3)
] + [{"ScriptName": "beta", "Outcome": "ok", "EventTimestampMs": 1764374400100}]


def wrangler_style() -> str:
    """Pretty-printed values one after another, as `wrangler tail --format json` prints."""
    return "".join(json.dumps(item, indent=2) + "\n" for item in ITEMS[:3])


async def test_wrangler_stream_and_ndjson_with_an_invalid_value(
    settings: Settings, tmp_path: Path
) -> None:
    await clients.ensure_topics(settings, {settings.topic: 2})
    source = tmp_path / "tail.json"
    bad_line = wrangler_style().count("\n") + 1
    source.write_text(
        wrangler_style() + '{"scriptName": "broken" "outcome": 1}\n' + json.dumps(ITEMS[3]) + "\n"
    )
    result = tailpipe("produce", str(source), env=env_of(settings))
    assert result.returncode == 0, result.stderr
    assert f"line {bad_line}: invalid JSON" in result.stderr
    assert "produced 4 messages" in result.stdout
    assert "1 invalid values skipped" in result.stdout
    received = await read_topic(settings, 4)
    assert sorted(received) == sorted((item_key(i), orjson.dumps(i)) for i in ITEMS)


async def test_stdin_and_fail_on_invalid(settings: Settings) -> None:
    await clients.ensure_topics(settings, {settings.topic: 1})
    text = json.dumps(ITEMS[0]) + "\n[1, 2\n" + json.dumps(ITEMS[1]) + "\n"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "produce", "-", "--fail-on-invalid",
        env={**os.environ, **env_of(settings)},
        cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    assert proc.returncode == 1
    assert b"line 2: invalid JSON" in err
    assert b"produced 1 messages" in out
    assert await read_topic(settings, 1) == [(item_key(ITEMS[0]), orjson.dumps(ITEMS[0]))]


async def test_a_lone_surrogate_is_published_for_the_consumer_to_repair(
    settings: Settings,
) -> None:
    """`wrangler tail` prints a string cut inside an emoji as `\\ud83d`; produce skipped such a
    value as invalid JSON. Now it is published with the escape kept."""
    await clients.ensure_topics(settings, {settings.topic: 1})
    text = json.dumps({**ITEMS[0], "logs": [{"level": "log", "message": ["cut \ud83d"]}]})
    assert "\\ud83d" in text
    result = tailpipe("produce", "-", env=env_of(settings), stdin=text + "\n")
    assert result.returncode == 0, result.stderr
    assert "produced 1 messages" in result.stdout
    [(key, value)] = await read_topic(settings, 1)
    assert key == item_key(json.loads(text))
    [invocation] = decode(value)
    assert invocation.logs[0].text == "cut \ufffd"
