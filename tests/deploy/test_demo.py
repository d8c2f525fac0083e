"""`make run`'s demo (deploy/local/demo.py) as a new user meets it: the first start of a fresh
broker, where Kafka elects the group's coordinator while the replicas join.

The terminal gets progress and the summary table; the replicas' own log lines go to files, and
a healthy start writes no error there (aiokafka's election chatter is not ours to print)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson

from pipeline.settings import Settings
from tests.conftest import ROOT, env_of, tailpipe
from tests.support.broker import Broker

DEMO = ROOT / "deploy" / "local" / "demo.py"


def demo(env: dict[str, str], logs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), "--logs", str(logs), "--deadline", "120", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


async def test_first_start_prints_progress_and_the_table_and_logs_no_error(
    migrated: Settings, tmp_path: Path
) -> None:
    broker = Broker(tmp_path)
    await broker.start()
    try:
        env = {
            **env_of(migrated),
            "TAILPIPE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "TAILPIPE_METRICS_PORT": "0",
        }
        created = tailpipe("topics", "create", env=env)
        assert created.returncode == 0, created.stdout + created.stderr
        logs = tmp_path / "logs"
        ran = demo(env, logs, "--count", "3000", "--replicas", "2")
    finally:
        broker.kill()
    printed = (ran.stdout + ran.stderr).splitlines()
    assert ran.returncode == 0, "\n".join(printed)
    progress = [line for line in printed if line.startswith("stored ")]
    assert 1 <= len(progress) <= 6, "\n".join(printed)
    assert progress[-1].startswith("stored 3,000 of 3,000 messages (100%)")
    assert len(printed) - len(progress) < 16, "\n".join(printed)  # a heading, a row per table
    assert not [line for line in printed if line.lstrip().startswith("{")], "no JSON log lines"
    assert any(line.split() == ["table", "rows", "added", "rows", "now"] for line in printed)
    (events_row,) = [line.split() for line in printed if line.startswith("tail_events ")]
    assert int(events_row[1].replace(",", "")) > 0
    assert "replica exit codes: [0, 0]" in printed
    assert not [line for line in printed if "error" in line.lower().replace("error_summary", "")]
    files = [logs / "replica-0.log", logs / "replica-1.log"]
    assert all(str(f) in ran.stdout for f in files), "the demo says where the logs are"
    for f in files:
        lines = [orjson.loads(line) for line in f.read_text().splitlines()]
        events = [line["event"] for line in lines]
        assert events[0] == "replica starting", f
        assert events[-1] == "replica stopped", f
        # The election's GroupCoordinatorNotAvailableError, the joins and assignments: debug.
        assert not [line for line in lines if line["logger"].startswith("aiokafka")], f
        assert not [line for line in lines if line["level"] == "error"], f
    assert any(
        line.get("event") == "partitions assigned"
        for f in files
        for line in map(orjson.loads, f.read_text().splitlines())
    )


async def test_a_replica_that_cannot_start_shows_its_log(
    migrated: Settings, tmp_path: Path
) -> None:
    """The metrics port is taken (a replica of an earlier run still up, say): the replica exits
    at once, and the demo says so with the end of that replica's log instead of waiting."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**env_of(migrated), "TAILPIPE_METRICS_PORT": str(port)}
        created = tailpipe("topics", "create", env=env)
        assert created.returncode == 0, created.stdout + created.stderr
        ran = demo(env, tmp_path / "logs", "--count", "100", "--replicas", "1")
    assert ran.returncode == 1
    out = ran.stdout + ran.stderr
    assert "replica 0 exited" in out
    assert f"TAILPIPE_METRICS_PORT {port}: cannot listen" in out, out
    assert str(tmp_path / "logs" / "replica-0.log") in out
    assert len(out.splitlines()) < 40, out
