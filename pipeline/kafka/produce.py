"""`tailpipe produce`: publish a stream of JSON values, one Kafka message each.

Takes one value per line or concatenated pretty-printed values, as `wrangler tail --format
json` prints them, so `wrangler tail my-worker --format json | tailpipe produce -` works. Each
value is re-serialised compactly and keyed by its identity (`pipeline.formats.identity`), so
one busy script spreads over every partition. Input is read in a thread, so a live stream
that goes quiet still gets its messages sent at once rather than when a batch fills.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from pipeline.errors import DecodeError
from pipeline.formats.identity import document_key
from pipeline.formats.jsonstream import Splitter, parse
from pipeline.formats.sanitize import dumps
from pipeline.kafka.publisher import BulkPublisher
from pipeline.settings import Settings

_READ = 1 << 16


@dataclass
class Outcome:
    sent: int = 0
    invalid: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Progress:
    """A one-line counter on a terminal, redrawn at most five times a second."""

    def __init__(self, out: TextIO) -> None:
        self._out = out if out.isatty() else None
        self._started = self._drawn = time.monotonic()

    def update(self, outcome: Outcome, *, final: bool = False) -> None:
        now = time.monotonic()
        if self._out is None or (not final and now - self._drawn < 0.2):
            return
        self._drawn = now
        rate = outcome.sent / max(now - self._started, 1e-9)
        self._out.write(
            f"\rproduced {outcome.sent} ({len(outcome.invalid)} invalid) {rate:,.0f}/s"
            + ("\n" if final else "")
        )
        self._out.flush()


async def run(
    settings: Settings, topic: str, source: BinaryIO, *, fail_on_invalid: bool, errors: TextIO
) -> Outcome:
    outcome = Outcome()
    progress = _Progress(errors)
    splitter = Splitter()
    started = time.monotonic()
    async with BulkPublisher(settings, topic) as publisher:
        while True:
            piece = await asyncio.to_thread(_read, source)
            chunks = splitter.feed(piece) if piece else splitter.close()
            for chunk in chunks:
                try:
                    value, lenient = parse(chunk)
                except DecodeError as exc:
                    outcome.invalid.append(str(exc))
                    print(f"tailpipe produce: {exc}", file=errors)
                    if fail_on_invalid:
                        await publisher.flush()
                        outcome.seconds = time.monotonic() - started
                        return outcome
                    continue
                await publisher.add(document_key(value), dumps(value, lenient))
                outcome.sent += 1
            if not piece:
                break
            if len(piece) < _READ:  # the input went quiet: do not hold what we have
                await publisher.submit()
            progress.update(outcome)
    outcome.seconds = time.monotonic() - started
    progress.update(outcome, final=True)
    return outcome


def _read(source: BinaryIO) -> bytes:
    read1 = getattr(source, "read1", None)
    return bytes(read1(_READ) if read1 is not None else source.read(_READ))


def open_source(path: str) -> BinaryIO:
    return sys.stdin.buffer if path == "-" else open(path, "rb")
