"""A replica's /metrics after a real run: every series there, with the exact counts of what was
processed, checked against what was produced and what PostgreSQL holds."""

from __future__ import annotations

import urllib.error

import asyncpg
import orjson

from pipeline import __version__, compiled, native
from pipeline.errors import DECODE_REASONS
from pipeline.kafka import clients
from pipeline.kafka.publisher import BulkPublisher
from pipeline.postgres import flush
from pipeline.replica.metrics import FAILURE_KINDS
from pipeline.settings import Settings
from tests.support.faults import wait_for
from tests.support.replica import START, Replica, assert_exactly_once, produce, wait_stored

TABLES = [table for table, _, _ in flush.RAW_TABLES]


def synth_item(n: int) -> bytes:
    return orjson.dumps({"scriptName": "w", "outcome": "ok", "eventTimestamp": START + n})


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


async def test_scrape_after_a_run_counts_exactly_what_was_processed(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 3, settings.alerts_topic: 1})
    produced = await produce(settings, 3000, seed=23, poison_ratio=0.02)
    replica = Replica(settings)
    replicas.append(replica)
    await wait_stored(db, settings.topic, produced.count, 90)

    # The lag gauges are refreshed every few seconds from the broker's end offsets.
    def caught_up() -> bool:
        m = replica.scrape()
        lags = [m.get(f'tailpipe_consumer_lag_messages{{partition="{p}",topic="{settings.topic}"}}')
                for p in range(3)]  # fmt: skip
        return lags == [0, 0, 0] and m["tailpipe_in_flight_rows"] == 0

    await wait_for(caught_up, 30, "lag 0 on every partition and nothing in flight")
    m = replica.scrape()
    assert replica.terminate() == 0
    await assert_exactly_once(db, produced)
    # Its own log: one JSON object per line, the last one the totals of the run.
    lines = replica.log_lines()
    assert all({"ts", "level", "logger", "event"} <= line.keys() for line in lines)
    assert lines[-1]["event"] == "replica stopped"
    assert lines[-1]["messages"] == produced.count

    assert m["tailpipe_messages_total"] == produced.count
    assert m["tailpipe_invocations_total"] == produced.invocations
    for table in TABLES:
        stored = await db.fetchval(f"SELECT count(*) FROM {table}")
        assert m[f'tailpipe_rows_written_total{{table="{table}"}}'] == stored, table
    assert m['tailpipe_rows_written_total{table="tail_logs"}'] == produced.log_rows
    assert _sum(m, "tailpipe_decode_failures_total{") == produced.poison > 0
    assert m['tailpipe_dead_letters_total{reason="DecodeError"}'] == produced.poison
    assert produced.redactions, "the synthetic stream carries secrets"
    for rule, n in produced.redactions.items():
        assert m[f'tailpipe_redactions_total{{rule="{rule}"}}'] == n

    # One observation per committed batch; the batch sizes add up to every row and dead letter.
    flushes = m["tailpipe_flushes_total"]
    assert flushes >= 1
    assert m["tailpipe_flush_duration_seconds_count"] == flushes
    assert m["tailpipe_batch_rows_count"] == flushes
    rows = produced.invocations + produced.log_rows + produced.poison
    assert m["tailpipe_batch_rows_sum"] == rows
    assert 1 <= m["tailpipe_end_to_end_delay_seconds_count"] <= flushes
    assert m["tailpipe_last_flush_timestamp_seconds"] > 0

    # Alerts by rule: this replica raised every alert in the outbox, so the counts are the table's.
    alerts = await db.fetch("SELECT rule, count(*) FROM critical_alerts GROUP BY rule")
    raised: dict[str, int] = {rule: n for rule, n in alerts}
    assert raised, "the synthetic stream holds exceptions: the outcome rule fires"
    counted = {k[len('tailpipe_alerts_total{rule="') : -2]: v for k, v in m.items()
               if k.startswith("tailpipe_alerts_total{")}  # fmt: skip
    assert {rule: n for rule, n in counted.items() if n} == raised
    assert "guard_rail" in counted, "enabled rules are exported at 0 from the start"

    # Nothing failed, nothing paused; every failure kind is there at 0.
    for kind in FAILURE_KINDS:
        assert m[f'tailpipe_flush_failures_total{{kind="{kind}"}}'] == 0
    assert _sum(m, "tailpipe_retries_total") == 0
    assert m['tailpipe_dependency_up{dependency="postgres"}'] == 1
    assert m["tailpipe_paused_partitions"] == 0
    assert m["tailpipe_guard_rail_tripped"] == 0
    assert m["tailpipe_in_flight_bytes"] == 0
    assert m["tailpipe_partition_assignments_total"] == 1
    built = str(compiled()).lower()
    loaded = str(native.loaded()).lower()
    assert loaded == "true"
    info = f'tailpipe_build_info{{compiled="{built}",native="{loaded}",version="{__version__}"}}'
    assert m[info] == 1


async def test_lag_series_follow_partition_ownership(
    migrated: Settings, replicas: list[Replica]
) -> None:
    """Summed over replicas, the lag counts each partition once: a replica that loses a
    partition in a rebalance stops reporting it."""
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 4})

    def reported(replica: Replica) -> set[str]:
        try:
            samples = replica.scrape()
        except urllib.error.URLError:  # not listening yet
            return set()
        return {k for k in samples if k.startswith("tailpipe_consumer_lag_messages{")}

    first = Replica(settings)
    replicas.append(first)
    await wait_for(lambda: len(reported(first)) == 4, 60, "the only replica reports 4 partitions")
    second = Replica(settings)
    replicas.append(second)

    def split() -> bool:
        a, b = reported(first), reported(second)
        return len(a) == len(b) == 2 and not a & b

    await wait_for(split, 90, "two partitions each, none reported by both")


async def test_distinct_bad_inputs_never_add_series(
    migrated: Settings, db: asyncpg.Connection, replicas: list[Replica]
) -> None:
    """`tailpipe_decode_failures_total{reason}` was labelled with the problem's text, which
    quotes the input (`-7 is negative`, `expected a string, got number 12345`): every odd input
    made a new series. 600 distinct bad messages must leave the label set as it was."""
    settings = migrated
    await clients.ensure_topics(settings, {settings.topic: 2})
    bad = [
        variant
        for n in range(100)
        for variant in (
            b'{"outcome": "ok", "wallTime": -%d}' % (n + 1),
            b'{"outcome": %d}' % n,
            b'{"outcome": "ok", "scriptName": %d}' % n,
            b'{"outcome": "ok", "eventTimestamp": %d}' % n,
            b'{"outcome": "ok", "logs": [{"level": "lvl%d"}]}' % n,
            b'{"nothing known %d": 1}' % n,
        )
    ]
    # The guard rail stops a replica whose batch could hold over 500 dead letters in its last
    # 1,000 messages: one bad message in 13.
    good = [synth_item(n) for n in range(12 * len(bad))]
    async with BulkPublisher(settings, settings.topic) as publisher:
        for n, value in enumerate(good):
            await publisher.add(None, value)
            if n % 12 == 0:
                await publisher.add(None, bad[n // 12])
    replica = Replica(settings)
    replicas.append(replica)
    await wait_stored(db, settings.topic, len(good) + len(bad), 90)
    series = {
        name: value
        for name, value in replica.scrape().items()
        if name.startswith("tailpipe_decode_failures_total{")
    }
    assert len(series) == len(DECODE_REASONS)  # each exported from the start, no other
    assert sum(series.values()) == len(bad)
    assert replica.terminate() == 0
