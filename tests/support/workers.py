"""The real Workers runtime for the integration tests: the pinned `workerd` from npm serving
tests/workerd/workerd.capnp (or the pinned `wrangler dev` serving Workers' own wrangler.toml
projects), the HTTP server a capture Worker posts to, and a real `tailpipe collect` for the
project's tail-forwarder to post to.

Each piece is a context manager that starts a real process or server and stops it on exit, so a
failing test never leaves one behind. Nothing is mocked: what the runtime reports is what the
capture server records, and what the forwarder posts goes through the collector to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.postgres.connect import connect
from pipeline.settings import Settings
from tests.conftest import (
    ROOT,
    drop_schema,
    env_of,
    free_port,
    isolated,
    tailpipe,
    tool,
    unique,
)
from tests.support.replica import Replica, wait_stored

ASSETS = ROOT / "tests" / "workerd"
CONFIG = ASSETS / "workerd.capnp"
STACK = ROOT / "deploy" / "local" / "stack.py"


def workerd_binary() -> Path:
    """The pinned workerd, installed under .local/workerd first if it is not there yet
    (`stack.py workerd`, which `make test` has run already through `stack.py tools`)."""
    done = subprocess.run(
        [sys.executable, str(STACK), "workerd"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stack.py workerd exited {done.returncode}:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


def wrangler_entry() -> Path:
    """The pinned wrangler's entry script (run it with `node`), installed under .local/wrangler
    first if it is not there yet (`stack.py wrangler`, which `make test` has run already through
    `stack.py tools`)."""
    done = subprocess.run(
        [sys.executable, str(STACK), "wrangler"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"stack.py wrangler exited {done.returncode}:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


def wait_for(check: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll check until it passes; fail naming `what` after deadline_s. Another process makes
    the progress (a port opening, a POST arriving): there is nothing to await but the check."""
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {deadline_s} s"
        time.sleep(0.05)


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port from a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback port. A bare connect, no
    request: a request to the producer would itself be an invocation its tails report."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Capture:
    """The HTTP server the capture Worker posts each `events` batch to, in a thread.

    `items` are the trace items in arrival order, exactly as the runtime handed them to the
    Tail Worker (the forwarder got the same ones)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.posts = 0
        self._lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 and keep-alive, as the runtime's fetch expects: an HTTP/1.0 server closes
            # each connection after its answer, and a runtime that reuses one just then (a race)
            # loses that request ("Network connection lost"), failing the test at random.
            protocol_version = "HTTP/1.1"
            timeout = 60  # an idle connection's thread ends; the runs are shorter

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                # As the runtime wrote it: a lone surrogate (a string cut inside an emoji) is
                # kept, where orjson would refuse the batch.
                events = json.loads(body)
                with capture._lock:
                    capture.items.extend(events)
                    capture.posts += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per POST on stderr is noise

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.items)

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class Process:
    """A child process logging to a file (never a pipe nobody reads), stopped on exit:
    SIGTERM, then SIGKILL after a grace period.

    With `group`, the child leads a process group of its own, and stopping signals the whole
    group: for a command whose own children (wrangler's Node.js process and its workerd) must
    not outlive it."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], logs: Path,
        *, cwd: Path = ROOT, group: bool = False,
    ) -> None:  # fmt: skip
        self.name = name
        self.log = logs / f"{name}.log"
        self.group = group
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, **env}, cwd=cwd, start_new_session=group,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_ready(self, check: Callable[[], bool], deadline_s: float) -> None:
        def ready() -> bool:
            assert self.alive(), f"{self.name} exited {self.proc.returncode}:\n{self.tail()}"
            return check()

        wait_for(ready, deadline_s, f"{self.name} ready (log: {self.log})")

    def stop(self, grace_s: float = 10) -> int:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
        code = self.proc.wait(10)
        if self.group:
            # Whatever of the group outlived its leader. (The group's id cannot be reused while
            # a member lives; with none left, killpg finds nothing.)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return code

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)


@contextlib.contextmanager
def collector(env: Mapping[str, str], token: str, logs: Path) -> Iterator[str]:
    """A real `tailpipe collect` on a free port, ready (Kafka reachable); yields its tail URL."""
    port = free_port()
    settings_env = {**env, "TAILPIPE_COLLECT_PORT": str(port), "TAILPIPE_COLLECT_TOKENS": token}
    argv = [sys.executable, "-m", "pipeline", "collect", "--host", "127.0.0.1"]
    process = Process("collect", argv, settings_env, logs)
    try:
        process.wait_ready(lambda: _answers_200(f"http://127.0.0.1:{port}/readyz"), 30)
        yield f"http://127.0.0.1:{port}/v1/tail"
    finally:
        process.stop()


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Workerd:
    """`workerd serve` on tests/workerd/workerd.capnp: the producer and driver sockets on free
    ports; the forwarder's and capture Worker's URLs and token in its environment."""

    def __init__(self, process: Process, producer_port: int, driver_port: int) -> None:
        self.process = process
        self.producer = f"http://127.0.0.1:{producer_port}"
        self.driver = f"http://127.0.0.1:{driver_port}"


@contextlib.contextmanager
def workerd(
    binary: Path, *, tailpipe_url: str, tailpipe_token: str, capture_url: str, logs: Path
) -> Iterator[Workerd]:
    producer_port, driver_port = free_port(), free_port()
    argv = [
        str(binary), "serve", str(CONFIG), "config",
        # The driver's `service_binding_extra_handlers` flag is experimental in this version.
        "--experimental", "--verbose",
        "-s", f"producer=127.0.0.1:{producer_port}", "-s", f"driver=127.0.0.1:{driver_port}",
    ]  # fmt: skip
    env = {
        "TAILPIPE_URL": tailpipe_url,
        "TAILPIPE_TOKEN": tailpipe_token,
        "CAPTURE_URL": capture_url,
    }
    process = Process("workerd", argv, env, logs)
    try:
        process.wait_ready(lambda: listening(producer_port) and listening(driver_port), 30)
        yield Workerd(process, producer_port, driver_port)
    finally:
        process.stop()


WRANGLER_ENV = {
    "WRANGLER_SEND_METRICS": "false",  # no telemetry
    "WRANGLER_HIDE_BANNER": "true",  # the banner asks the npm registry for a newer version
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",  # no workers.cloudflare.com/cf.json: a placeholder cf
}
"""What keeps `wrangler dev` local and quiet: it then reaches nothing beyond the loopback."""


def worker_project(
    dest: Path, files: Mapping[str, Path], dev_vars: Mapping[str, str] | None = None
) -> Path:
    """A Worker's project directory for `wrangler dev`, made at `dest` from `files` (name in
    the project -> source file, copied byte for byte), with a `.dev.vars` when `dev_vars` is
    given (wrangler's local values of vars and secrets; they override `[vars]`). Returns the
    path of its wrangler.toml. A copy, because wrangler writes its build files to `.wrangler/`
    beside the configuration."""
    for name, source in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest / name)
    if dev_vars is not None:
        (dest / ".dev.vars").write_text("".join(f"{k}={v}\n" for k, v in dev_vars.items()))
    return dest / "wrangler.toml"


@contextlib.contextmanager
def wrangler_dev(
    entry: Path, configs: list[Path], *, logs: Path, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`wrangler dev -c <config> ...` on a free loopback port, local only, with everything it
    writes (build files aside: see worker_project) under `logs`; yields the URL of the first
    configuration's Worker once the port accepts connections (wrangler's proxy holds requests
    until the runtime is up). The others run in the same runtime: Tail Workers, services."""
    port = free_port()
    argv = [
        tool("node"), str(entry), "dev", *(arg for c in configs for arg in ("-c", str(c))),
        "--local", "--ip", "127.0.0.1", "--port", str(port),
        "--inspector-port", str(free_port()), "--persist-to", str(logs / "state"),
        "--show-interactive-dev-session=false",
    ]  # fmt: skip
    full_env = {
        **WRANGLER_ENV,
        # Its user configuration (login, device id, the registry of running dev sessions) and
        # cache: this run's own, never the developer's.
        "XDG_CONFIG_HOME": str(logs / "config"),
        "WRANGLER_CACHE_DIR": str(logs / "cache"),
        **(env or {}),
    }
    process = Process("wrangler", argv, full_env, logs, cwd=logs, group=True)
    try:
        process.wait_ready(lambda: listening(port), 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def run_dir(name: str) -> Path:
    """.local/<name>/, emptied: one run's logs and records, kept after the test for whoever
    reads a failure (the next run replaces them)."""
    path = ROOT / ".local" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


async def stored_rows(
    settings: Settings, messages: int, key: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """Once every message of the topic is stored (or dead-lettered), the rows a real-runtime
    test checks: `events`, `logs` (each with `key`, its invocation's `key(...)` of
    `{event_type, event_ms, url}`, None when it has none), `usage` (calls), `rate_limits`
    (readings), `dead_letters`, and
    `row_texts` (every raw row as text, to look for secrets in)."""
    db = await connect(settings)
    try:
        await wait_stored(db, settings.topic, messages, 60)
        events = await db.fetch(
            "SELECT *, (extract(epoch FROM ts) * 1000)::bigint AS event_ms FROM tail_events"
        )
        logs = await db.fetch(
            """
            SELECT l.*, (extract(epoch FROM l.ts) * 1000)::bigint AS ms,
                   e.event_type AS e_type, (extract(epoch FROM e.ts) * 1000)::bigint AS e_ms,
                   e.url AS e_url
            FROM tail_logs l
            LEFT JOIN tail_events e USING (topic, kafka_partition, kafka_offset, item)
            ORDER BY l.kafka_partition, l.kafka_offset, l.item, l.seq
            """
        )
        usage = await db.fetch("SELECT * FROM api_calls_daily ORDER BY provider, model, endpoint")
        rate_limits = await db.fetch("SELECT * FROM rate_limit_readings_daily ORDER BY provider")
        dead = await db.fetchval("SELECT coalesce(sum(messages), 0) FROM dead_letters")
        texts = await db.fetch("SELECT e::text FROM tail_events e UNION ALL "
                               "SELECT l::text FROM tail_logs l")  # fmt: skip
    finally:
        await db.close()
    log_rows = []
    for record in logs:
        row = dict(record)
        invocation = {"event_type": row["e_type"], "event_ms": row["e_ms"], "url": row["e_url"]}
        row["key"] = None if row["e_type"] is None else key(invocation)
        log_rows.append(row)
    return {
        "events": [dict(r) for r in events],
        "logs": log_rows,
        "usage": [dict(r) for r in usage],
        "rate_limits": [dict(r) for r in rate_limits],
        "dead_letters": int(dead),
        "row_texts": [r[0] for r in texts],
    }


def show(request: pytest.FixtureRequest, title: str, summary: dict[str, Any], logs: Path) -> None:
    """A run's summary on the terminal, past pytest's output capture, once a module's tests
    ran (it is also in `logs`/summary.json)."""
    line = ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, list))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\n{title}: {line} (details: {logs})")


@contextlib.contextmanager
def scratch(base: Settings, name: str) -> Iterator[tuple[Settings, Path]]:
    """Settings with a schema and topics of their own, migrated and created, and a fresh
    .local/<name>/ for the run's files; the schema is dropped afterwards."""
    logs = run_dir(name)
    settings = isolated(base, unique("t"))
    try:
        for argv in (["migrate"], ["topics", "create", "--partitions", "3"]):
            done = tailpipe(*argv, env=env_of(settings))
            assert done.returncode == 0, done.stderr
        yield settings, logs
    finally:
        asyncio.run(drop_schema(base, settings.postgres_schema))


class Watched:
    """A replica while a real-runtime test runs; `sanitized` is its count of repaired values
    (tailpipe_sanitized_total), read when it stops."""

    def __init__(self, settings: Settings) -> None:
        self.replica = Replica(settings)
        self.sanitized = 0.0


@contextlib.contextmanager
def replica(settings: Settings, logs: Path) -> Iterator[Watched]:
    """One `tailpipe run`, stopped cleanly (exit 0) at the end, its log kept in `logs`."""
    watched = Watched(settings)
    try:
        yield watched
        metrics = watched.replica.scrape()
        watched.sanitized = sum(
            v for k, v in metrics.items() if k.startswith("tailpipe_sanitized_total")
        )
        assert watched.replica.terminate() == 0
    finally:
        if watched.replica.proc.poll() is None:
            watched.replica.kill()
        (logs / "replica.log").write_text(watched.replica.tail())
