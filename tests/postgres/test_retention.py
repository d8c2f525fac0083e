"""`tailpipe retention --keep-days N` drops whole old day partitions and keeps the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from pipeline.postgres.day_partitions import (
    DAY_TABLES,
    PARTITIONED_TABLES,
    PartitionManager,
    partition_name,
)
from pipeline.settings import Settings
from tests.conftest import env_of, tailpipe


async def test_cli_drops_only_old_days(settings: Settings, db: asyncpg.Connection) -> None:
    assert tailpipe("migrate", env=env_of(settings)).returncode == 0
    today = datetime.now(UTC).date()
    old, kept = today - timedelta(days=10), today - timedelta(days=1)
    await PartitionManager().ensure(db, [old, kept, today])
    result = tailpipe("retention", "--keep-days", "3", env=env_of(settings))
    assert result.returncode == 0, result.stderr
    assert f"dropped {partition_name('tail_events', old)}" in result.stdout
    assert f"dropped {partition_name('tail_logs', old)}" in result.stdout
    assert f"dropped {partition_name('tail_spans', old)}" in result.stdout
    assert "3 partitions dropped" in result.stdout
    left = await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
        settings.postgres_schema,
    )
    assert [r[0] for r in left] == sorted(
        partition_name(t, d) for t in PARTITIONED_TABLES for d in (kept, today)
    )
    bad = tailpipe("retention", "--keep-days", "0", env=env_of(settings))
    assert bad.returncode == 2


async def test_the_identities_are_kept_for_the_dedup_window_not_the_rows_days(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A retry is caught for TAILPIPE_DEDUP_WINDOW after its event time: the identities' days
    past that window go, whatever `--keep-days` keeps of the rows."""
    assert tailpipe("migrate", env=env_of(settings)).returncode == 0
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in range(5)]
    await PartitionManager(DAY_TABLES).ensure(db, days)
    env = {**env_of(settings), "TAILPIPE_DEDUP_WINDOW": "36h"}  # two days
    result = tailpipe("retention", "--keep-days", "30", env=env)
    assert result.returncode == 0, result.stderr
    dropped = {line.removeprefix("dropped ") for line in result.stdout.splitlines()
               if line.startswith("dropped ")}  # fmt: skip
    assert dropped == {partition_name("ingest_keys", d) for d in days[3:]}
    short = tailpipe("retention", "--keep-days", "30", env={**env, "TAILPIPE_DEDUP_WINDOW": "5m"})
    assert short.returncode == 2
    assert "TAILPIPE_DEDUP_WINDOW" in short.stderr
