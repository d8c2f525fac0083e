"""The flush's step that completes OTLP invocations with their traces' root spans.

A Workers Observability invocation comes in two exports, its logs and its trace, which may
arrive in either order and in different batches (`pipeline.transform.completion` says what a
root span tells). Inside the flush's transaction, after the raw rows are copied, one query
finds every stored invocation still awaiting its root span whose trace this batch touched
(this batch's invocations and this batch's root spans: `Part.completing`), joined to that
root span. One more statement fills the rows, and the difference goes into the batch's
rollups (`rollup.count_completion`), so the hourly outcomes, error counts and CPU and wall
percentiles hold the completed values and still equal a recomputation from the raw rows.

Why this is exactly once: the row leaves `tail_events_awaiting_root_span` (schema 0016) when
filled, so it is filled once; the fill commits or rolls back with the offsets. And why the
pair meets: the collector keys an OTLP logs message by its trace id, as it keys a traces
message, so the invocation and its root span are on one partition, read by one replica in
order, and the later of the two finds the earlier committed. Messages keyed another way
(by an earlier collector, or a producer writing to Kafka itself) may be read concurrently by
two replicas, each blind to the other's uncommitted row; those rows stay unfilled, and the API
fills the invocation from its root span when it is read (`api/invocations.py`).

Nothing runs for a batch without OTLP data: it has nothing in `completing`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from pipeline.transform.batch import Batch
from pipeline.transform.completion import Told, completed, stored_row_awaits, told
from pipeline.transform.rollup import Rollups, count_completion

WINDOW = timedelta(days=1)
"""How far apart in time an invocation and its root span may be, either way: it bounds the
day partitions searched. The API joins them within the same span."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_PAIRS = """
SELECT DISTINCT ON (e.kafka_offset, e.kafka_partition, e.item, e.topic, e.ts)
       e.ts, e.topic, e.kafka_partition, e.kafka_offset, e.item, e.script, e.event_type,
       e.outcome, e.extra ?| ARRAY['cloudflare.handler_type', 'faas.trigger'] AS named,
       s.attributes::text AS attributes, s.duration_us
FROM tail_events AS e
JOIN tail_spans AS s
  ON s.trace_id = e.trace_id AND s.parent_span_id IS NULL AND s.script = e.script
 AND s.ts >= $2 AND s.ts <= $3
WHERE e.trace_id = ANY($1::bytea[]) AND e.ts >= $2 AND e.ts <= $3
  AND e.source = 'otlp' AND e.cpu_ms IS NULL AND e.wall_ms IS NULL AND e.event_type <> 'otel'
ORDER BY e.kafka_offset, e.kafka_partition, e.item, e.topic, e.ts, s.ts, s.span_id
"""
# The predicate repeats the partial index's (schema/0016), so the planner uses it.

_FILL = """
UPDATE tail_events AS e SET outcome = f.outcome, cpu_ms = f.cpu_ms, wall_ms = f.wall_ms
FROM unnest($1::timestamptz[], $2::text[], $3::int[], $4::bigint[], $5::int[], $6::text[],
            $7::int[], $8::int[])
     AS f(ts, topic, kafka_partition, kafka_offset, item, outcome, cpu_ms, wall_ms)
WHERE e.kafka_offset = f.kafka_offset AND e.kafka_partition = f.kafka_partition
  AND e.item = f.item AND e.topic = f.topic AND e.ts = f.ts
"""


async def complete(conn: asyncpg.Connection, batch: Batch) -> tuple[Rollups, int]:
    """Fill the invocations this batch completes: the rollups' difference (empty when none),
    and how many were filled."""
    delta = Rollups()
    wanted = [pair for part in batch.parts.values() for pair in part.completing]
    if not wanted:
        return delta, 0
    times = [ts for _, ts in wanted]
    found = await conn.fetch(
        _PAIRS, list({trace for trace, _ in wanted}), min(times) - WINDOW, max(times) + WINDOW
    )
    fills = []
    for r in found:
        if not stored_row_awaits(r["event_type"], r["named"]):
            continue
        before = Told(r["outcome"], None, None)
        after = completed(before, told(orjson.loads(r["attributes"]), r["duration_us"]))
        if after is None:
            continue
        fills.append((r, after))
        ts_ms = (r["ts"] - _EPOCH) // _MS
        count_completion(delta, ts_ms, r["script"], r["event_type"], before, after)
    if fills:
        await conn.execute(
            _FILL,
            *(
                [r[k] for r, _ in fills]
                for k in ("ts", "topic", "kafka_partition", "kafka_offset", "item")
            ),
            [after.outcome for _, after in fills],
            [after.cpu_ms for _, after in fills],
            [after.wall_ms for _, after in fills],
        )
    return delta, len(fills)
