"""`tailpipe migrate` against the real PostgreSQL: ordered, exactly once, edits reported."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import date
from pathlib import Path

import asyncpg

from pipeline.postgres import migrate
from pipeline.postgres.day_partitions import PartitionManager
from pipeline.settings import Settings
from tests.conftest import ROOT, env_of, tailpipe

VERSIONS = [m.version for m in migrate.discover(migrate.default_directory())]
SHIPPED = len(VERSIONS)


def applied(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("applied ")]


async def test_second_run_applies_nothing(settings: Settings, db: asyncpg.Connection) -> None:
    first = tailpipe("migrate", env=env_of(settings))
    assert first.returncode == 0, first.stderr
    assert len(applied(first.stdout)) == SHIPPED
    second = tailpipe("migrate", env=env_of(settings))
    assert second.returncode == 0, second.stderr
    assert applied(second.stdout) == []
    assert f"{SHIPPED} migrations, 0 applied now" in second.stdout
    rows = await db.fetch("SELECT version FROM schema_migrations ORDER BY version")
    # Every shipped file, in order (a number may be reserved by a change not merged yet).
    assert [r["version"] for r in rows] == VERSIONS
    assert await db.fetchval("SELECT count(*) FROM pipeline_offsets") == 0


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)


async def test_concurrent_runs_apply_each_migration_once(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # 0003 is not idempotent: applied twice, `counter` would hold two rows.
    _write(
        tmp_path,
        {
            "0001_counter.sql": "CREATE TABLE counter (n integer NOT NULL);",
            "0002_slow.sql": "SELECT pg_sleep(0.5); CREATE TABLE slow (x integer);",
            "0003_bump.sql": "INSERT INTO counter VALUES (1);",
        },
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            "migrate",
            "--dir",
            str(tmp_path),
            env={**os.environ, **env_of(settings)},
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(120):
        results = [await p.communicate() for p in procs]
    outputs = [(out.decode(), err.decode()) for out, err in results]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    assert sorted(line for out, _ in outputs for line in applied(out)) == [
        "applied 0001_counter",
        "applied 0002_slow",
        "applied 0003_bump",
    ]
    assert await db.fetchval("SELECT count(*) FROM counter") == 1
    rows = await db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [(1, "counter"), (2, "slow"), (3, "bump")]


async def test_edited_migration_is_reported(settings: Settings, tmp_path: Path) -> None:
    _write(tmp_path, {"0001_a.sql": "CREATE TABLE a (x int);"})
    assert tailpipe("migrate", "--dir", str(tmp_path), env=env_of(settings)).returncode == 0
    _write(tmp_path, {"0001_a.sql": "CREATE TABLE a (x bigint);", "0002_b.sql": "SELECT 1;"})
    edited = tailpipe("migrate", "--dir", str(tmp_path), env=env_of(settings))
    assert edited.returncode == 1
    assert "0001_a.sql changed after being applied" in edited.stderr
    assert "applied 0002_b" not in edited.stdout


async def test_failed_migration_leaves_no_trace(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    _write(
        tmp_path,
        {"0001_ok.sql": "CREATE TABLE ok (x int);", "0002_bad.sql": "CREATE TABLE t (x nope);"},
    )
    result = tailpipe("migrate", "--dir", str(tmp_path), env=env_of(settings))
    assert result.returncode == 1
    assert "0002_bad.sql failed" in result.stderr
    assert await db.fetchval("SELECT max(version) FROM schema_migrations") == 1


async def test_rows_stored_without_a_script_name_become_unnamed(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """0007: rows an earlier version stored with script '' are moved to '(unnamed)', in the raw
    tables, the rollups, the error groups and the alerts (whose links answered 422)."""
    shipped = sorted(migrate.default_directory().glob("*.sql"))
    before = [f for f in shipped if f.name < "0007"]
    _write(tmp_path / "old", {f.name: f.read_text() for f in before})
    old = tailpipe("migrate", "--dir", str(tmp_path / "old"), env=env_of(settings))
    assert old.returncode == 0, old.stderr
    await PartitionManager(("tail_events", "tail_logs")).ensure(db, {date(2026, 11, 29)})
    at = "'2026-11-29 10:00+00'"
    await db.execute(f"""
        INSERT INTO tail_events (ts, script, event_type, outcome, log_count, exception_count,
                                 truncated, source, topic, kafka_partition, kafka_offset, item)
        VALUES ({at}, '', 'fetch', 'exception', 0, 1, false, 'trace', 't', 0, 1, 0),
               ({at}, 'named', 'fetch', 'ok', 0, 0, false, 'trace', 't', 0, 2, 0);
        INSERT INTO tail_logs (ts, script, event_type, outcome, level, message, topic,
                               kafka_partition, kafka_offset, item, seq)
        VALUES ({at}, '', 'fetch', 'exception', 'exception', 'Error: x', 't', 0, 1, 0, 0);
        INSERT INTO tail_metrics_hourly VALUES
            ({at}, '', 'fetch', 1, 1, '{{}}', '{{}}', 0, 0, 0, 0, '{{}}', '{{}}');
        INSERT INTO scan_activity_hourly VALUES ({at}, '', 1, 0, 0, '{{}}', 0, 0, 0);
        INSERT INTO error_summary (fingerprint, name, template, first_seen, last_seen,
                                   occurrences, scripts, sample_message)
        VALUES ('f', 'Error', 'x', {at}, {at}, 1, ARRAY['', 'named'], 'x');
        INSERT INTO critical_alerts (id, rule, severity, script, dedup_key, first_at, last_at,
                                     summary, details, window_start)
        VALUES (gen_random_uuid(), 'outcome', 'critical', '', 'outcome::exception', {at}, {at},
                ': an invocation ended with exception',
                '{{"query": "/api/logs/recent?script=&outcome=exception"}}', {at}),
               (gen_random_uuid(), 'error_rate', 'warning', '', 'error_rate:', {at}, {at},
                ': error rate 100%', '{{"query": "/api/logs/recent?script="}}', {at});
    """)  # fmt: skip
    new = tailpipe("migrate", env=env_of(settings))
    assert new.returncode == 0, new.stderr
    assert "applied 0007_unnamed_scripts\n" in new.stdout
    scripts = "SELECT array_agg(DISTINCT script ORDER BY script) FROM "
    assert await db.fetchval(scripts + "tail_events") == ["(unnamed)", "named"]
    for table in ("tail_logs", "tail_metrics_hourly", "scan_activity_hourly", "critical_alerts"):
        assert await db.fetchval(scripts + table) == ["(unnamed)"], table
    assert await db.fetchval("SELECT scripts FROM error_summary") == ["(unnamed)", "named"]
    alerts = {r[0]: r[1:] for r in await db.fetch(
        "SELECT rule, summary, details->>'query' FROM critical_alerts")}  # fmt: skip
    assert alerts == {
        "outcome": (
            "(unnamed): an invocation ended with exception",
            "/api/logs/recent?script=%28unnamed%29&outcome=exception",
        ),
        "error_rate": ("(unnamed): error rate 100%", "/api/logs/recent?script=%28unnamed%29"),
    }
