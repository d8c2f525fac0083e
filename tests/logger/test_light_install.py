"""The light install: `tailpipe-logger` (deploy/logger/pyproject.toml), built from this
repository, installed into a clean virtualenv with its dependencies. None of the server's
dependencies come with it, and a service logging through it reaches the real Kafka in the
shape the pipeline decodes."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import orjson

from pipeline.formats.decode import decode
from pipeline.kafka.clients import ensure_topics
from pipeline.settings import Settings
from tests.conftest import ROOT, read_topic

SERVER_ONLY = (
    "asyncpg",
    "aiobotocore",
    "botocore",
    "uvicorn",
    "starlette",
    "fastapi",
    "pydantic",
    "prometheus_client",
    "httpx",
)
"""Dependencies of `tailpipe` that a service which only logs must not be made to install."""

GH_TOKEN = "ghp_" + "Lw7e" * 9

SERVICE = """
import pipeline.logger as tailpipe

log = tailpipe.init()
log.info("light install up", token=GH_TOKEN)
with log.job("nightly-export", schedule="0 4 * * *"):
    log.warn("slow export", rows=120_000)
    log.llm_usage("claude-haiku-4-5", 1200, 80)
tailpipe.shutdown()
print("done")
"""


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


async def test_a_logging_only_install_has_no_server_dependency_and_logs_to_kafka(
    tmp_path: Path, settings: Settings
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_NO_CACHE_DIR")
        and not k.startswith("TAILPIPE_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "-q"]
    light = str(ROOT / "deploy" / "logger")
    _run([*pip, "wheel", "--no-deps", "-w", str(dist), light], env, tmp_path)
    [wheel] = dist.glob("tailpipe_logger-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not [
        name for name in names if not name.endswith((".py", ".toml", "RECORD", "METADATA", "WHEEL"))
    ], names
    assert "pipeline/logger/setup.py" in names
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env, tmp_path)
    python = str(venv / "bin" / "python")
    _run(
        [python, "-m", "pip", "install", "-q", "--only-binary=:all:", str(wheel)],
        env,
        tmp_path,
    )
    _run([python, "-m", "pip", "check"], env, tmp_path)

    probe = f"import importlib.util as u\nprint([m for m in {SERVER_ONLY!r} if u.find_spec(m)])"
    found = _run([python, "-c", probe], env, tmp_path)
    assert found.strip() == "[]", f"server dependencies in the light install: {found}"

    await ensure_topics(settings, {settings.topic: 1})  # `tailpipe topics create`, in production
    # Run outside the checkout, so that `pipeline` can only come from the installed wheel.
    service = tmp_path / "service.py"
    service.write_text(f"GH_TOKEN = {GH_TOKEN!r}\n{SERVICE}")
    run_env = {
        **env,
        "TAILPIPE_SERVICE": "light-svc",
        "TAILPIPE_ENVIRONMENT": "staging",
        "TAILPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TAILPIPE_TOPIC": settings.topic,
    }
    where = _run([python, "-c", "import pipeline; print(pipeline.__file__)"], run_env, tmp_path)
    assert where.startswith(str(venv)), where
    assert _run([python, str(service)], run_env, tmp_path).strip().endswith("done")

    values = [value for _, value in await read_topic(settings, 2)]
    assert all(GH_TOKEN.encode() not in value for value in values)
    items = [orjson.loads(value) for value in values]
    assert {item["scriptName"] for item in items} == {"light-svc"}
    assert all(item["scriptTags"] == ["environment:staging"] for item in items)
    invocations = [invocation for value in values for invocation in decode(value)]
    assert sorted(len(invocation.logs) for invocation in invocations) == [1, 2]
