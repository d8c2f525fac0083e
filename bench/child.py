"""The protocol between the ingest benchmark and the consumers it runs as child processes.

A child reports how many messages it has stored (or read) so far as JSON lines on stdout,
`{"done": n}`, each after the work it counts is committed. When it has reached its target it
does not exit: it waits for SIGTERM, so that the benchmark reads its CPU time and peak RSS from
/proc at the moment its work was done, as it does for `tailpipe run`. Standard library only:
the Quix app imports it from another virtualenv.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any


def progress(done: int, **extra: Any) -> None:
    """One progress line for the benchmark: messages stored (or read) so far."""
    sys.stdout.write(json.dumps({"done": done, **extra}) + "\n")
    sys.stdout.flush()


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, in the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def parse_line(line: bytes) -> dict[str, Any] | None:
    """A progress line, or None for anything else a child printed."""
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("done"), int) else None
