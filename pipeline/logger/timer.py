"""`timer(name)`: a context manager (sync and async) and a decorator (sync and async functions)
that emits a `timer` record `{"type": "timer", "name", "duration_ms"}` when the timed work ends,
whether it returned or raised (then with `error: <exception class>` in the context).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from pipeline.logger.core import Emitter

F = TypeVar("F", bound=Callable[..., Any])


class Timer:
    """Each `with` (or decorated call) times itself: one Timer may be entered again while in
    use, or decorate a function that runs concurrently. `duration_ms` is the last duration."""

    def __init__(self, logger: Emitter, name: str, level: str, context: dict[str, Any]) -> None:
        self.logger = logger
        self.name = name
        self.level = level
        self.context = context
        self.duration_ms: float | None = None
        self._starts: list[float] = []

    def __enter__(self) -> Timer:
        self._starts.append(time.perf_counter())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        start = self._starts.pop() if self._starts else time.perf_counter()
        self._emit(start, exc_type)

    async def __aenter__(self) -> Timer:
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
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    self._emit(start, type(exc))
                    raise
                self._emit(start, None)
                return result

            return cast(F, timed_async)

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._emit(start, type(exc))
                raise
            self._emit(start, None)
            return result

        return cast(F, timed)

    def _emit(self, start: float, error: type[BaseException] | None) -> None:
        duration = round((time.perf_counter() - start) * 1000, 3)
        self.duration_ms = duration
        context = self.context if error is None else {**self.context, "error": error.__name__}
        record = {"type": "timer", "name": self.name, "duration_ms": duration}
        message = f"{self.name} took {duration:.1f}ms"
        self.logger.emit(self.level, message, context=context, record=record)
