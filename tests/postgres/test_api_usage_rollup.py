"""API calls and rate-limit readings from log lines to PostgreSQL (issue 16, item 4; apart
since issue 20: `api_calls_daily`, `rate_limit_readings_daily`): what the extractor reads
(prompt-cache tokens, rate-limit limits, resets and Retry-After) is rolled up, merged by the
flush's upsert (`postgres.rollups.merge_rollups`, as the writer and `dlq replay` run it) and
printed by `tailpipe inspect`; and no log line can make that merge fail, which would stop the
consumer (the merge is not bisected like the COPY: a refusal there is retried for ever)."""

from __future__ import annotations

import random
import string
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from pipeline.postgres.rollup_upserts import merge_rollups
from pipeline.settings import Settings
from pipeline.transform.batch import Batch
from pipeline.transform.extract import Extractor
from pipeline.transform.inspect import rollup_lines
from pipeline.transform.rollup import Rollups
from pipeline.transform.transformer import Transformer

TS = 1_764_374_400_000  # 2025-11-29T00:00:00Z
DAY = date(2025, 11, 29)
TRANSFORMER = Transformer(Extractor.from_files())

ANTHROPIC = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi!"}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 2051,
        "cache_read_input_tokens": 2051,
    },
}
OPENAI = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024},
    },
}
LINES: list[list[Any]] = [
    ["anthropic response", ANTHROPIC],
    [orjson.dumps(OPENAI).decode()],
    [
        "X-RateLimit-Limit: 5000, X-RateLimit-Remaining: 4999, X-RateLimit-Reset: 1764378000,"
        " x-github-request-id: CE0C:2F0A:1"
    ],
    ["GitHub API rate limit remaining: 12"],  # the newer GitHub reading
    ["retry-after: 30"],
]


def item(lines: list[list[Any]]) -> bytes:
    return orjson.dumps(
        {
            "scriptName": "llm-router",
            "outcome": "ok",
            "eventTimestamp": TS,
            "event": None,
            "logs": [
                {"timestamp": TS + 10 * i, "level": "log", "message": message}
                for i, message in enumerate(lines)
            ],
            "exceptions": [],
        }
    )


def batch_of(*values: bytes) -> Batch:
    batch = Batch()
    for offset, value in enumerate(values):
        TRANSFORMER.add(batch, "events", 0, offset, TS, None, value)
    assert not any(part.dead for part in batch.parts.values())
    return batch


Calls = dict[tuple[str, str | None, str | None], dict[str, Any]]


async def merged(db: asyncpg.Connection, batch: Batch) -> tuple[Calls, dict[str, dict[str, Any]]]:
    """The calls (by provider, model, endpoint) and rate-limit readings (by provider) stored."""
    async with db.transaction():
        await merge_rollups(db, batch)
    calls = await db.fetch("SELECT * FROM api_calls_daily")
    readings = await db.fetch("SELECT * FROM rate_limit_readings_daily")
    return (
        {(r["provider"], r["model"], r["endpoint"]): dict(r) for r in calls},
        {r["provider"]: dict(r) for r in readings},
    )


async def test_cache_tokens_and_rate_limit_details_are_stored(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    batch = batch_of(item(LINES))
    calls, readings = await merged(db, batch)
    assert set(calls) == {
        ("anthropic", "claude-sonnet-4-5-20250929", None),
        ("openai", "gpt-4o-2024-08-06", None),
    }
    assert set(readings) == {"github", "unknown"}
    claude = calls[("anthropic", "claude-sonnet-4-5-20250929", None)]
    assert (claude["day"], claude["calls"], claude["tokens_in"], claude["tokens_out"]) == (
        DAY,
        1,
        2095,
        503,
    )
    assert (claude["cache_read_tokens"], claude["cache_write_tokens"]) == (2051, 2051)
    assert (claude["cost_usd"], claude["unpriced_calls"]) == (Decimal("0.022137"), 0)
    gpt = calls[("openai", "gpt-4o-2024-08-06", None)]
    # Cached prompt tokens apart; no cached-input price for OpenAI: unpriced, not guessed.
    assert (gpt["tokens_in"], gpt["cache_read_tokens"], gpt["cost_usd"], gpt["unpriced_calls"]) == (
        93,
        1024,
        None,
        1,
    )
    github = readings["github"]
    assert (github["day"], github["remaining"], github["largest_limit"]) == (DAY, 12, 5000)
    assert github["latest_reset"] == datetime(2025, 11, 29, 1, 0, tzinfo=UTC)
    assert github["remaining_at"] == datetime.fromtimestamp((TS + 30) / 1000, UTC)
    assert github["limited"] == 0
    unknown = readings["unknown"]
    # Retry-After: a reading that says the limit was reached, and when to retry.
    assert (unknown["limited"], unknown["remaining"]) == (1, None)
    assert unknown["latest_reset"] == datetime.fromtimestamp((TS + 40 + 30_000) / 1000, UTC)

    # A second flush with an older GitHub reading, a larger limit and an earlier reset: the
    # newest remaining stays, the largest limit and the latest reset win, counts add up.
    older = ["x-ratelimit-limit: 6000 x-ratelimit-remaining: 1 x-ratelimit-reset: 1764370000"
             " (github)"]  # fmt: skip
    calls, readings = await merged(db, batch_of(item([*LINES[:2], older])))
    github = readings["github"]
    assert (github["remaining"], github["largest_limit"]) == (12, 6000)
    assert github["latest_reset"] == datetime(2025, 11, 29, 1, 0, tzinfo=UTC)
    claude = calls[("anthropic", "claude-sonnet-4-5-20250929", None)]
    assert (claude["calls"], claude["cache_read_tokens"], claude["cache_write_tokens"]) == (
        2,
        4102,
        4102,
    )
    assert claude["cost_usd"] == Decimal("0.044274")
    # The same cost per hour and script, for the cost condition (`cost_hourly`).
    hourly = await db.fetch("SELECT hour, script, cost_usd FROM cost_hourly")
    assert [r["cost_usd"] for r in hourly] == [Decimal("0.0442731")]  # unrounded
    assert hourly[0]["hour"] == datetime.fromtimestamp((TS - TS % 3_600_000) / 1000, UTC)


async def test_no_log_line_can_make_the_merge_fail(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    """Readings and names PostgreSQL could not hold: a remaining count past 2^31 (the column
    was an integer), an endpoint or a model too long for a btree key (about 2,700 bytes).
    Before, each made every retry of the flush fail."""
    # PostgreSQL compresses long keys: only text that does not compress overflows a btree page.
    rng = random.Random(16)
    noise = "".join(rng.choices(string.ascii_letters + string.digits + "-_", k=9000))
    lines: list[list[Any]] = [
        ["github ratelimit remaining=9999999999999"],
        ["GET /gists/" + noise + " 200 in 5ms"],
        [orjson.dumps({"event": "llm_usage", "model": "m-" + noise, "usage": {}}).decode()],
        ["llm usage model=" + noise + " input_tokens=5"],
        [{"model": "claude-haiku-4-5", "usage": {"input_tokens": 1}, "provider": noise}],
    ]
    calls, readings = await merged(db, batch_of(item(lines)))
    assert readings["github"]["remaining"] == 9_999_999_999_999
    # The over-long endpoint is no name: the call is counted without one.
    assert calls[("github", None, None)]["calls"] == 1
    # The over-long models are no names: no call to a model (the llm_usage event needs one).
    assert not any(model is not None and len(model) > 200 for _, model, _ in calls)
    # The over-long provider is no name: inferred from the model.
    assert calls[("anthropic", "claude-haiku-4-5", None)]["calls"] == 1


def test_inspect_prints_the_new_columns() -> None:
    batch = batch_of(item(LINES))
    lines = list(rollup_lines(Rollups.combine(p.rollups for p in batch.parts.values())))
    calls = {
        (line["key"]["provider"], line["key"]["model"]): line["add"]
        for line in lines
        if line["rollup"] == "api_calls_daily"
    }
    readings = {
        line["key"]["provider"]: line["add"]
        for line in lines
        if line["rollup"] == "rate_limit_readings_daily"
    }
    claude = calls[("anthropic", "claude-sonnet-4-5-20250929")]
    assert (claude["cache_read_tokens"], claude["cache_write_tokens"]) == (2051, 2051)
    assert ("github", "*") not in calls
    github = readings["github"]
    assert (github["remaining"], github["largest_limit"]) == (12, 5000)
    assert github["latest_reset"] == "2025-11-29T01:00:00+00:00"
    assert readings["unknown"]["limited"] == 1
