"""The OTLP benchmark's collector process, and what it reads of the host around it.

`collector()` runs one real `tailpipe collect` as its own process, on a free loopback port with
the benchmark's token, so that its CPU and peak RSS can be read from /proc apart from this
client's (`bench/measure.py`). The host's busy time and the Kafka broker's process let the
report split the cores a timed run used among the collector, this client, Kafka and everything
else: another process competing for the cores shows there rather than as a slow collector.
`runs_compiled` says whether the numbers are of the mypyc-compiled decoders.

`say` and `shown` are here because the collector's start reports through them; the driver,
`bench/otlp.py`, uses them too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from pipeline.settings import Settings
from tests.conftest import env_of

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-otlp-collect-token-0123456789"
_TICK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def collector(settings: Settings, log_path: Path, ready_s: float = 60) -> Iterator[tuple[str, int]]:
    """`tailpipe collect` on a free loopback port: (base URL, pid) once /readyz answers 200
    (Kafka reachable, the topic there); SIGTERM on leaving, whatever happened."""
    port = free_port()
    env = {
        **os.environ,
        **env_of(settings),
        "TAILPIPE_COLLECT_PORT": str(port),
        "TAILPIPE_COLLECT_TOKENS": TOKEN,
    }
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "collect", "--host", "127.0.0.1"],
            env=env,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"tailpipe collect exited {proc.returncode}; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"tailpipe collect not ready after {ready_s:.0f} s; {log_path}")
            time.sleep(0.1)
        say(f"tailpipe collect ready on {base} (pid {proc.pid}, output in {shown(log_path)})")
        yield base, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- measuring -------------------------------------------------------------------------------
def host_busy_seconds() -> float:
    """CPU seconds every core of the host spent busy (not idle, not waiting for I/O)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


def kafka_pid() -> int | None:
    """The local Kafka broker's process (the JVM running `kafka.Kafka`), if it runs here."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                if b"kafka.Kafka\0" in cmdline.read():
                    return int(name)
        except OSError:
            continue
    return None


def runs_compiled(pid: int) -> bool | None:
    """Whether the process has mypyc's compiled modules loaded (`pipeline.compiled()` of that
    process: the collector imports compiled decoders, `pipeline.formats`), None if unknown."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any("__mypyc." in line for line in maps)
    except OSError:
        return None
