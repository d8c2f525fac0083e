"""The trace item being collected for one request, job or standalone record.

A `Trace` gathers log entries and exceptions, then `finish` encodes them as one tailpipe
envelope: a Workers trace item plus `"envelope": "tailpipe/1"`. The trace of the request or job
in progress is `CURRENT` (a context variable), so every logger and the stdlib handler add to
it without being passed anything; tasks and threads started inside inherit it.

Like the Workers runtime, a trace holds at most `max_bytes` of logs and exceptions (256 KB) and
`max_lines` log lines: past that it records one "Log size limit exceeded" warning (or a "Trace
resource limit exceeded" exception) and sets `truncated`. The exception that ends a request or
job is always recorded, over the limit if need be: it is what the trace is read for.

Entries are serialised as they arrive (that is how their size is known) and spliced into the
envelope at the end, so each is serialised once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from pipeline.logger.entry import Entry, dumps, now_ms
from pipeline.logger.propagation import SpanContext, current

ENVELOPE_VERSION = "tailpipe/1"
MAX_LINES = 1_000
MAX_BYTES = 256 * 1024
LOG_LIMIT_MESSAGE = (
    "Log size limit exceeded: more than {bytes} KB or {lines} lines were logged during this "
    "invocation; later logs were not recorded."
)
EXCEPTION_LIMIT_MESSAGE = "Trace resource limit exceeded; subsequent exceptions not recorded."
"""Both start the way the runtime's markers do, which the decoder recognises."""

CURRENT: ContextVar[Trace | None] = ContextVar("tailpipe_trace", default=None)

_dumps = dumps  # orjson, with what it refuses (a 2**70 field) written as text


class Trace:
    """One invocation's logs and exceptions. Thread-safe: a request's work may run in a thread
    pool that inherited the context."""

    def __init__(
        self,
        service: str,
        event: dict[str, Any],
        *,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
        timestamp_ms: int | None = None,
    ) -> None:
        self.service = service
        self.event = event
        """The trace item's `event`; the middleware adds `response` before `finish`."""
        self.span: SpanContext | None = None
        """Its trace and span ids, the envelope's `spanContext` (set by the middleware, a job,
        or for a standalone record the span in progress)."""
        self.started_ms = now_ms() if timestamp_ms is None else timestamp_ms
        self._t0 = time.perf_counter()
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._logs: list[bytes] = []
        self._exceptions: list[bytes] = []
        self._seen: list[BaseException] = []
        self._size = 0
        self._logs_cut = False
        self._exceptions_cut = False
        self._lock = threading.Lock()
        self.closed = False

    @property
    def truncated(self) -> bool:
        return self._logs_cut or self._exceptions_cut

    def add_log(self, entry: Entry) -> bool:
        """Add a (redacted) log entry; False if the trace was already finished."""
        data = _dumps(entry)
        with self._lock:
            if self.closed:
                return False
            if self._logs_cut:
                return True
            if len(self._logs) >= self._max_lines or self._size + len(data) > self._max_bytes:
                self._logs_cut = True
                limit = LOG_LIMIT_MESSAGE.format(
                    bytes=self._max_bytes // 1024, lines=self._max_lines
                )
                marker = {"timestamp": now_ms(), "level": "warn", "message": [limit]}
                self._logs.append(_dumps(marker))
                return True
            self._logs.append(data)
            self._size += len(data)
            return True

    def add_exception(
        self, exc: BaseException | None, entry: Entry, *, force: bool = False
    ) -> bool:
        """Add a (redacted) exception entry; False if the trace was already finished. The same
        exception object is recorded once (logged, then re-raised to the middleware). `force`
        records it even over the size limit."""
        data = _dumps(entry)
        with self._lock:
            if self.closed:
                return False
            if exc is not None:
                if any(seen is exc for seen in self._seen):
                    return True
                self._seen.append(exc)
            if not force and (self._exceptions_cut or self._size + len(data) > self._max_bytes):
                if not self._exceptions_cut:
                    self._exceptions_cut = True
                    marker = {
                        "timestamp": now_ms(),
                        "name": "Error",
                        "message": EXCEPTION_LIMIT_MESSAGE,
                    }
                    self._exceptions.append(_dumps(marker))
                return True
            self._exceptions.append(data)
            self._size += len(data)
            return True

    def finish(
        self, outcome: str, *, wall_ms: int | None = None, fields: Mapping[str, Any] | None = None
    ) -> bytes:
        """Close the trace and encode it; later entries are refused (`add_*` return False).
        `fields` are more top-level fields (the logger's release and environment)."""
        with self._lock:
            self.closed = True
            if wall_ms is None:
                wall_ms = int((time.perf_counter() - self._t0) * 1000)
            head = {
                "envelope": ENVELOPE_VERSION,
                "scriptName": self.service,
                "eventTimestamp": self.started_ms,
                "event": self.event,
                "outcome": outcome,
                # No `cpuTime`: a Python service cannot tell one request's CPU time from its
                # neighbours' on the same thread, and 0 would read as measured (stored NULL).
                "wallTime": wall_ms,
                "truncated": self.truncated,
            }
            if fields:
                head.update(fields)
            if self.span is not None:
                head["spanContext"] = self.span.envelope()
            # `{...head...,"logs":[...],"exceptions":[...]}`: the entries are already JSON.
            return b"".join(
                (
                    _dumps(head)[:-1],
                    b',"logs":[',
                    b",".join(self._logs),
                    b'],"exceptions":[',
                    b",".join(self._exceptions),
                    b"]}",
                )
            )


def standalone(
    service: str,
    entry: Entry | None,
    exception: tuple[BaseException | None, Entry] | None = None,
    *,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
    fields: Mapping[str, Any] | None = None,
) -> bytes:
    """The envelope of a record emitted outside any request or job: event `{"log": {}}`."""
    timestamp = entry["timestamp"] if entry is not None else None
    trace = Trace(
        service, {"log": {}}, max_lines=max_lines, max_bytes=max_bytes, timestamp_ms=timestamp
    )
    trace.span = current()
    if entry is not None:
        trace.add_log(entry)
    if exception is not None:
        trace.add_exception(exception[0], exception[1])
    return trace.finish("ok", wall_ms=0, fields=fields)
