"""`tailpipe check` against the real stack, and with each dependency down in turn."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import botocore.session
import pytest

from pipeline.settings import Settings
from tests.conftest import env_of, free_port, tailpipe

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _lines(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line.strip()}


def test_all_three_ok(settings: Settings) -> None:
    env = env_of(settings)
    assert tailpipe("migrate", env=env).returncode == 0
    assert tailpipe("topics", "create", "--partitions", "2", env=env).returncode == 0
    result = tailpipe("check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert sorted(lines) == ["kafka", "postgres", "s3"]
    assert all(line.split()[1] == "OK" for line in lines.values())
    assert f"topics {settings.topic}, {settings.alerts_topic} exist" in lines["kafka"]
    assert "migrations applied" in lines["postgres"]
    assert "run `tailpipe migrate`" not in lines["postgres"]


@pytest.fixture
def own_s3() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A separate moto server, so stopping it leaves the shared stack alone."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = cast(
        "S3Client",
        botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="k",
            aws_secret_access_key="s",
        ),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket="tailpipe-dlq")
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.1)
    yield endpoint, server
    server.kill()
    server.wait()


def test_stopped_s3_is_named(
    settings: Settings, own_s3: tuple[str, subprocess.Popen[bytes]]
) -> None:
    endpoint, server = own_s3
    env = {**env_of(settings), "TAILPIPE_S3_ENDPOINT": endpoint}
    before = tailpipe("check", env=env)
    assert _lines(before.stdout)["s3"].split()[1] == "OK"
    server.terminate()
    server.wait(timeout=30)
    after = tailpipe("check", env=env)
    assert after.returncode == 1
    lines = _lines(after.stdout)
    assert lines["s3"].split()[1] == "FAILED"
    assert endpoint in lines["s3"]
    assert lines["kafka"].split()[1] == "OK"
    assert lines["postgres"].split()[1] == "OK"


@pytest.mark.parametrize("dependency", ["kafka", "postgres"])
def test_unreachable_dependency_is_named(settings: Settings, dependency: str) -> None:
    port = free_port()  # nothing listens here: as good as a stopped server to a client
    override = {
        "kafka": {"TAILPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"},
        "postgres": {"TAILPIPE_POSTGRES_DSN": f"postgresql://tailpipe@127.0.0.1:{port}/tailpipe"},
    }[dependency]
    result = tailpipe("check", env={**env_of(settings), **override})
    assert result.returncode == 1
    lines = _lines(result.stdout)
    assert lines[dependency].split()[1] == "FAILED"
    assert f"127.0.0.1:{port}" in lines[dependency]
    others = {"kafka", "postgres", "s3"} - {dependency}
    assert all(lines[o].split()[1] == "OK" for o in others)
