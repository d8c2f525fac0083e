"""py-spy for the OTLP benchmark: the collector recorded during a timed run, its samples summed.

py-spy records raw stacks at 200 Hz, only of the thread holding the GIL: the collector's CPU is
Python's, so that is where it goes. The summary gives each function's share of the samples on
the stack (inclusive, leaving out the frames of threads, the loop and the command that are on
nearly every stack, so the shares say where the work is) and at its top (self), for the JSON
and the few lines the report prints.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy_binary(given: str | None) -> str | None:
    for candidate in (given, shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


async def start_profile(spy: str, pid: int, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        spy, "record", "--gil", "-r", "200", "-f", "raw", "-o", str(out), "--pid", str(pid),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def stop_profile(proc: asyncio.subprocess.Process) -> None:
    """SIGINT: py-spy writes what it sampled and exits."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


_WRAPPERS = (
    "threading.py",
    "concurrent/futures/thread.py",
    "runpy>",
    "asyncio/runners.py",
    "asyncio/events.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "pipeline/__main__.py",
    "pipeline/cli.py",
    "pipeline/commands.py",
    "pipeline/web/server.py",
    "pipeline/web/metrics.py",
    "starlette/",
    "uvicorn/middleware/",
    "uvicorn/protocols/http/httptools_impl.py",
)
"""Files whose frames are on nearly every stack (threads, the loop, the command): left out of
the inclusive shares, which are about where the work is (a request's own work shows under the
collector's and aiokafka's functions)."""


def _function(frame: str) -> tuple[str, bool]:
    """`name (path/to/file.py:12)` -> (`name (to/file.py)`, whether a wrapper's frame): one
    entry per function, not per line."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if not path:
        return name, False
    wrapper = any(w in path for w in _WRAPPERS) or (
        name == "serve" and path.endswith("collector/app.py")
    )
    return f"{name} ({'/'.join(Path(path).parts[-2:])})", wrapper


def profile_summary(path: Path, top: int = 12) -> dict[str, Any]:
    """Shares of the samples: by function on the stack (inclusive) and at its top (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return {"error": str(exc)}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";")]
        total += n
        for name in {name for name, wrapper in frames if not wrapper}:
            inclusive[name] += n
        if frames:
            own[frames[-1][0]] += n
    if not total:
        return {"samples": 0}

    def shares(counts: Counter[str]) -> list[list[Any]]:
        return [[name, round(n / total, 3)] for name, n in counts.most_common(top)]

    return {"samples": total, "inclusive": shares(inclusive), "self": shares(own)}


def profile_lines(results: list[dict[str, Any]], top: int = 6) -> str:
    lines = []
    for r in results:
        summary = r.get("profile")
        if not summary or not summary.get("samples"):
            continue
        lines.append(f"{r['case']}: {summary['samples']} samples")
        for label in ("inclusive", "self"):
            shares = ", ".join(f"{name} {share:.0%}" for name, share in summary[label][:top])
            lines.append(f"  {label:<9} {shares}")
    return "\n".join(lines)
