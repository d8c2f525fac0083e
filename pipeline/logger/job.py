"""`job(name)`: one job or cron run collected into one trace item, as the middleware does for a
request. A context manager (sync and async) and a decorator (sync and async functions).

The trace's event is `{"job": {"name": name, **details}}`; an exception leaving the block is
recorded (outcome `exception`, or `canceled` for a cancelled task) and propagates unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, cast

from pipeline.logger.core import Emitter
from pipeline.logger.entry import exception_entry
from pipeline.logger.propagation import SPAN, SpanContext, child_of_current
from pipeline.logger.trace import CURRENT, Trace
from pipeline.transform.redact.engine import redact_json

F = TypeVar("F", bound=Callable[..., Any])


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError):
        return "canceled"  # the runtime's word for a client that went away
    return "exception"


def finish(logger: Emitter, trace: Trace, exc: BaseException | None) -> None:
    """Record the exception that ended the invocation and publish the trace. Never raises."""
    core = logger.core
    try:
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            entry = exception_entry(exc, core.redactions, in_app=core.in_app)
            trace.add_exception(exc, entry, force=True)
        core.publish(trace.finish(outcome_of(exc), fields=core.fields))
    except Exception as error:
        core.failed(error)


class Job:
    """Each `with` starts a new trace, so one Job may be entered again (nested or in turn);
    decorated functions get a trace per call."""

    def __init__(self, logger: Emitter, name: str, details: dict[str, Any]) -> None:
        self.logger = logger
        self.name = name
        self.details = details
        self._running: list[tuple[Trace, Token[Trace | None]]] = []
        self._spans: list[Token[SpanContext | None]] = []

    def _trace(self) -> Trace:
        core = self.logger.core
        details = redact_json(self.details, core.redactions) if self.details else {}
        return Trace(
            core.service,
            {"job": {"name": self.name, **details}},
            max_lines=core.max_lines,
            max_bytes=core.max_bytes,
        )

    def __enter__(self) -> Job:
        trace = self._trace()
        # A span of its own: a child of the request (or job) it runs in, else a new trace.
        trace.span = child_of_current()
        self._spans.append(SPAN.set(trace.span))
        self._running.append((trace, CURRENT.set(trace)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        trace, token = self._running.pop()
        span_token = self._spans.pop()
        # Exited in another context than it was entered in: leave the variable be.
        with contextlib.suppress(ValueError):
            CURRENT.reset(token)
        with contextlib.suppress(ValueError):
            SPAN.reset(span_token)
        finish(self.logger, trace, exc)

    async def __aenter__(self) -> Job:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with Job(self.logger, self.name, self.details):
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with Job(self.logger, self.name, self.details):
                return func(*args, **kwargs)

        return cast(F, run)
