"""`counts_add`, the merge of {"name": count} maps in the rollups' upserts and `counts_sum`:
the sum of both maps by key, whatever their sizes, overlap and emptiness."""

from __future__ import annotations

import random
from collections import Counter

import asyncpg
import orjson

from pipeline.settings import Settings

Counts = dict[str, int] | None
KEYS = ["0", "z", "35", "ok", "exception", "canceled", *map(str, range(40, 260))]
EDGES: list[tuple[Counts, Counts]] = [
    (None, None), (None, {}), ({}, None), ({}, {}), ({"ok": 1}, None), (None, {"ok": 1}),
    ({"ok": 1}, {"ok": 2}), ({"ok": 1}, {"exception": 2}), ({"z": 0}, {"z": 0}),
    ({"35": 2**40}, {"35": 2**40, "36": 1}),
]  # fmt: skip


def _random_counts(rng: random.Random) -> Counts:
    if rng.random() < 0.1:
        return None
    return {key: rng.randrange(2**40) for key in rng.sample(KEYS, rng.randrange(0, 220))}


def _sum(a: Counts, b: Counts) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counts in (a or {}, b or {}):
        for key, value in counts.items():
            total[key] += value
    return dict(total)


def _jsonb(counts: Counts) -> str | None:
    return None if counts is None else orjson.dumps(counts).decode()


async def test_counts_add_sums_by_key(migrated: Settings, db: asyncpg.Connection) -> None:
    rng = random.Random(7)
    pairs = [*EDGES, *((_random_counts(rng), _random_counts(rng)) for _ in range(400))]
    got = await db.fetch(
        "SELECT counts_add(a::jsonb, b::jsonb)::text AS merged"
        " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(a, b, n) ORDER BY n",
        [_jsonb(a) for a, _ in pairs],
        [_jsonb(b) for _, b in pairs],
    )
    assert [orjson.loads(row["merged"]) for row in got] == [_sum(a, b) for a, b in pairs]


async def test_counts_sum_adds_every_row(migrated: Settings, db: asyncpg.Connection) -> None:
    rows = [{"ok": 3, "exception": 1}, {}, {"ok": 2, "canceled": 5}, {"35": 7}]
    merged = await db.fetchval(
        "SELECT counts_sum(m::jsonb)::text FROM unnest($1::text[]) AS m",
        [orjson.dumps(r).decode() for r in rows],
    )
    assert orjson.loads(merged) == {"ok": 5, "exception": 1, "canceled": 5, "35": 7}
