"""The structured logger: bound context, level methods, typed records.

    log = tailpipe_logger(service="billing").bind(request_id="req_1", repo="acme/api")
    log.info("scan queued", files=12)
    log.api_call("github", "/repos/{owner}/{repo}", status=200, duration_ms=183.2)

Each call builds one log entry, runs the configured processors (plain callables, as in
structlog: `entry -> entry`, or None to drop it), then redaction (always, last, and not
optional), then hands it to `core.deliver`. Logging never raises into the application: a
failure is counted in `errors` and the record is lost.

This module is what a service holds and calls; it makes timers (`timer`) and jobs (`job`).
What they need in turn, the state every logger bound from one `tailpipe_logger` call shares
and the delivery of entries, is one floor down in `core`, so that they need not import this
module back.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.logger.core import Core, ExcInfo, Processor, deliver
from pipeline.logger.entry import (
    LEVEL_ALIASES,
    LEVELS,
    exception_entry,
    log_entry,
    now_ms,
    redact_entry,
    render,
)
from pipeline.logger.job import Job
from pipeline.logger.publish import Publisher, StreamPublisher
from pipeline.logger.stack import InApp
from pipeline.logger.timer import Timer
from pipeline.logger.trace import MAX_BYTES, MAX_LINES
from pipeline.logger.typed_records import typed


class Logger:
    """A logger with bound context. Immutable: `bind` returns a new one."""

    __slots__ = ("_context", "_core")

    def __init__(self, core: Core, context: Mapping[str, Any] | None = None) -> None:
        self._core = core
        self._context: dict[str, Any] = dict(context or {})

    @property
    def service(self) -> str:
        return self._core.service

    @property
    def publisher(self) -> Publisher:
        return self._core.publisher

    @property
    def context(self) -> dict[str, Any]:
        return dict(self._context)

    @property
    def redactions(self) -> Counter[str]:
        return self._core.redactions

    @property
    def errors(self) -> int:
        """Records lost to a failure inside the logger (a processor raised, ...)."""
        return self._core.errors

    @property
    def core(self) -> Core:
        return self._core

    def bind(self, **context: Any) -> Logger:
        return Logger(self._core, {**self._context, **context})

    def unbind(self, *keys: str) -> Logger:
        return Logger(self._core, {k: v for k, v in self._context.items() if k not in keys})

    # --- levels ---------------------------------------------------------------------------

    def debug(self, message: object, /, *args: object, exc_info: ExcInfo = None, **kw: Any) -> None:
        self.emit("debug", message, *args, context=kw, exc_info=exc_info)

    def info(self, message: object, /, *args: object, exc_info: ExcInfo = None, **kw: Any) -> None:
        self.emit("info", message, *args, context=kw, exc_info=exc_info)

    def log(self, message: object, /, *args: object, exc_info: ExcInfo = None, **kw: Any) -> None:
        """console.log's level, `log`."""
        self.emit("log", message, *args, context=kw, exc_info=exc_info)

    def warn(self, message: object, /, *args: object, exc_info: ExcInfo = None, **kw: Any) -> None:
        self.emit("warn", message, *args, context=kw, exc_info=exc_info)

    warning = warn

    def error(self, message: object, /, *args: object, exc_info: ExcInfo = None, **kw: Any) -> None:
        self.emit("error", message, *args, context=kw, exc_info=exc_info)

    def exception(
        self, message: object, /, *args: object, exc_info: ExcInfo = True, **kw: Any
    ) -> None:
        """An `error` entry plus the exception being handled in the trace's `exceptions`."""
        self.emit("error", message, *args, context=kw, exc_info=exc_info)

    # --- typed records ----------------------------------------------------------------------

    def api_call(
        self,
        provider: str,
        endpoint: str,
        model: str | None = None,
        status: int | None = None,
        duration_ms: float | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        rate_limit_remaining: int | None = None,
        *,
        message: str | None = None,
        level: str | None = None,
        **context: Any,
    ) -> None:
        """A call to an external API (GitHub, an LLM provider...). The level is `info`, `warn`
        for a 4xx status, `error` for 5xx or 0 (no response), unless given."""
        record, invalid = typed(
            "api_call",
            {
                "provider": provider,
                "endpoint": endpoint,
                "model": model,
                "status": status,
                "duration_ms": duration_ms,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "rate_limit_remaining": rate_limit_remaining,
            },
        )
        if invalid:
            context["invalid_fields"] = invalid
        if level is None:
            level = _status_level(status)
        if message is None:
            message = f"{provider} {endpoint}"
            if status is not None:
                message += f" {status}"
            if duration_ms is not None:
                message += f" in {_ms(duration_ms)}"
        self.emit(level, message, context=context, record=record)

    def llm_usage(
        self,
        model: str,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        *,
        cache_read: int | None = None,
        cache_write: int | None = None,
        usage: object = None,
        provider: str | None = None,
        duration_ms: float | None = None,
        error: bool = False,
        message: str | None = None,
        level: str | None = None,
        **context: Any,
    ) -> None:
        """One LLM call's tokens, counted and priced by the pipeline (`api_usage_daily`).

        Either the counts, in OpenTelemetry's GenAI sense: `input_tokens` counts every input
        token, cached ones included, and `cache_read`/`cache_write` say how many of them were
        read from or written to a prompt cache. (Anthropic's `usage.input_tokens` leaves the
        cache out: add `cache_read_input_tokens` and `cache_creation_input_tokens` to it, or
        pass the object as `usage`.) They are sent as the `gen_ai.*` attributes.

        Or `usage`: the usage object an SDK returned (Anthropic, OpenAI, Gemini, Workers AI;
        a dict, or an object with `model_dump()`), read by the pipeline in its own shape.

        The level is `info`, `error` when `error` is true, unless given."""
        fields: dict[str, Any]
        if usage is not None or (input_tokens is None and output_tokens is None):
            # tailpipe's own form: the SDK's object as it is, or a call without counts
            fields = {"event": "llm_usage", "model": model}
            if usage is not None:
                fields["usage"] = _plain(usage)
            if provider is not None:
                fields["provider"] = provider
        else:
            fields = {"gen_ai.request.model": model}
            for key, value in (
                ("gen_ai.usage.input_tokens", input_tokens),
                ("gen_ai.usage.output_tokens", output_tokens),
                ("gen_ai.usage.cache_read.input_tokens", cache_read),
                ("gen_ai.usage.cache_creation.input_tokens", cache_write),
            ):
                if value is not None:
                    fields[key] = value
            if provider is not None:
                fields["gen_ai.provider.name"] = provider
        if duration_ms is not None:
            fields["duration_ms"] = duration_ms
        if error:
            fields["error"] = True
        if message is None:
            message = f"llm {model}"
            if input_tokens is not None or output_tokens is not None:
                message += f": {input_tokens} in, {output_tokens} out"
        self.emit(level or ("error" if error else "info"), message, context={**context, **fields})

    def scan(
        self,
        repo: str,
        files: int,
        status: str,
        duration_ms: float,
        *,
        message: str | None = None,
        level: str = "info",
        **context: Any,
    ) -> None:
        """One repository scan and how it ended (`status`: "ok", "failed", ...)."""
        record, invalid = typed(
            "scan", {"repo": repo, "files": files, "status": status, "duration_ms": duration_ms}
        )
        if invalid:
            context["invalid_fields"] = invalid
        if message is None:
            message = f"scan {repo} {status}: {files} files in {_ms(duration_ms)}"
        self.emit(level, message, context=context, record=record)

    def timer(self, name: str, *, level: str = "debug", **context: Any) -> Timer:
        """Times a block (`with`, `async with`) or every call of a function (decorator, sync or
        async) and emits a `timer` record when it ends, also when it raises."""
        return Timer(self, name, level, context)

    def job(self, name: str, **details: Any) -> Job:
        """Collects one job or cron run (`with`, `async with`, or decorator) into one trace
        item with event `{"job": {"name": name, **details}}`."""
        return Job(self, name, details)

    # --- delivery ---------------------------------------------------------------------------

    def emit(
        self,
        level: str,
        message: object,
        /,
        *args: object,
        context: Mapping[str, Any] | None = None,
        record: dict[str, Any] | None = None,
        exc_info: ExcInfo = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """The one way in: every method above and the stdlib handler end here. `message` is
        positional-only in every method, so `message=` (or any other name) is context."""
        core = self._core
        levelno = LEVELS.get(level)
        if levelno is None:
            level = LEVEL_ALIASES.get(level, "log")
            levelno = LEVELS[level]
        if levelno < core.level:
            return
        try:
            timestamp = now_ms() if timestamp_ms is None else timestamp_ms
            # A copy, so that a processor changing the entry cannot change the bound context.
            bound = {**self._context, **context} if context else dict(self._context)
            entry = log_entry(level, render(message, args), bound, record, timestamp)
            for processor in core.processors:
                changed = processor(entry)
                if changed is None:
                    return
                entry = changed
            entry = redact_entry(entry, core.redactions)
            exc = _exception(exc_info)
            exception = (
                exception_entry(exc, core.redactions, timestamp, core.in_app) if exc else None
            )
            deliver(core, entry, exc, exception)
        except Exception as exc:
            core.failed(exc)


def _exception(exc_info: ExcInfo) -> BaseException | None:
    if exc_info is None or exc_info is False:
        return None
    if exc_info is True:
        return sys.exc_info()[1]
    return exc_info


def _ms(duration: object) -> str:
    """`183ms`; whatever was passed if it is not a number (a message must never raise)."""
    return f"{duration:.0f}ms" if isinstance(duration, int | float) else f"{duration}ms"


def _plain(usage: object) -> object:
    """An SDK's usage object as JSON-able data: pydantic models (Anthropic's and OpenAI's SDKs)
    through `model_dump`, other objects through their attributes."""
    if isinstance(usage, dict):
        return usage
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        return dump()
    return dict(getattr(usage, "__dict__", {}))


def _status_level(status: object) -> str:
    if type(status) is not int or 100 <= status < 400:
        return "info"
    if 400 <= status < 500:
        return "warn"
    return "error"


def tailpipe_logger(
    service: str,
    *,
    publisher: Publisher | None = None,
    level: str = "info",
    processors: Iterable[Processor] = (),
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
    release: str | None = None,
    environment: str | None = None,
    in_app: Iterable[str] = (),
) -> Logger:
    """A logger for `service` (the trace items' `scriptName`), publishing JSON lines to stdout
    unless given a `publisher` (e.g. a started `KafkaPublisher`). Records below `level` are
    skipped before any work: `info` by default, so debug lines and timers stay home.
    `max_lines`/`max_bytes` cap each request's or job's logs. `release` and `environment` go
    on every trace item (see `core.Core.fields`). `in_app` names top-level packages whose
    frames are the application's even installed in site-packages (see `stack`). `setup.init`
    builds one from the environment."""
    level = LEVEL_ALIASES.get(level, level)
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {', '.join(LEVELS)}, got {level!r}")
    core = Core(
        service,
        publisher if publisher is not None else StreamPublisher(),
        LEVELS[level],
        tuple(processors),
        max_lines,
        max_bytes,
        release,
        environment,
        InApp(frozenset((in_app,) if isinstance(in_app, str) else in_app)),
    )
    return Logger(core)
