"""The API as tests reach it: the app in-process with a token (`signed_in`, `get`), or a real
`tailpipe api` process over a test's schema (`serving`), as the dashboard tests drive it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from fastapi.testclient import TestClient

from pipeline.api.app import create_app
from pipeline.settings import Settings
from tests.conftest import ROOT, free_port


@contextmanager
def signed_in(settings: Settings, token: str) -> Iterator[TestClient]:
    """The API app over `settings`, its lifespan run, every request sent with `token`, which
    is made a read token."""
    with TestClient(create_app(replace(settings, api_read_tokens=(token,)))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def get(client: TestClient, path: str, **params: Any) -> Any:
    """A GET that must answer 200; its JSON."""
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@contextmanager
def serving(env: dict[str, str], read: str, write: str | None = None) -> Iterator[str]:
    """A `tailpipe api` process with these tokens over the settings in `env`, until the block
    ends; its base URL. Its log goes to a file, never a pipe nobody reads."""
    port = free_port()
    tokens = {"TAILPIPE_API_READ_TOKENS": read}
    if write is not None:
        tokens["TAILPIPE_API_WRITE_TOKENS"] = write
    log = tempfile.NamedTemporaryFile(prefix="api-", suffix=".log", delete=False)  # noqa: SIM115
    api = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "api", "--host", "127.0.0.1"],
        env={**env, "PATH": "/usr/bin:/bin", "TAILPIPE_API_PORT": str(port), **tokens},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/readyz", 60)
        yield url
    finally:
        api.terminate()
        api.wait(30)


def wait_ready(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(0.1)  # another process is starting; nothing to wait on but its port
