"""What every logger bound from one `tailpipe_logger` call shares (`Core`), and where an entry
goes once it is built (`deliver`): into the request or job in progress (`trace.CURRENT`) or,
outside any, published on its own as a `{"log": {}}` trace item.

The floor of the logger: the bound loggers (`bound`), their timers (`timer`) and jobs (`job`)
all stand on it, and it imports none of them, so the logger's imports point one way. A timer
or a job reaches the logger that made it through `Emitter`, the little of a `bound.Logger` they
use, rather than by importing `bound`, which makes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pipeline.formats.identity import value_key
from pipeline.logger.entry import Entry
from pipeline.logger.publish import Publisher
from pipeline.logger.stack import APPLICATION, InApp
from pipeline.logger.trace import CURRENT, standalone

Processor = Callable[[Entry], Entry | None]
"""Sees each entry before redaction; returns it (changed or not), or None to drop it."""
ExcInfo = bool | BaseException | None


class Core:
    """What every logger bound from one `tailpipe_logger` call shares."""

    def __init__(
        self,
        service: str,
        publisher: Publisher,
        level: int,
        processors: tuple[Processor, ...],
        max_lines: int,
        max_bytes: int,
        release: str | None = None,
        environment: str | None = None,
        in_app: InApp = APPLICATION,
    ) -> None:
        self.service = service
        self.in_app = in_app
        """Which frames of an exception's stack are the application's (see `stack`)."""
        self.release = release
        self.environment = environment
        self.fields: dict[str, Any] = {}
        """Top-level envelope fields every trace item of this logger carries: the release as
        `scriptVersion.tag`, the environment as the script tag `environment:<name>`. The
        decoder stores them in `script_version` and `script_tags`, as it does a Worker's."""
        if release is not None:
            self.fields["scriptVersion"] = {"tag": release}
        if environment is not None:
            self.fields["scriptTags"] = [f"environment:{environment}"]
        self.publisher = publisher
        self.level = level
        self.processors = processors
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.redactions: Counter[str] = Counter()
        """Replacements per redaction rule, over every record of this logger."""
        self.errors = 0
        self.last_error: str | None = None

    def adopt(self, other: Core) -> None:
        """Take `other`'s configuration, keeping the counts: every logger bound from this
        core follows (`setup.init` called again, or after a `get_logger` that came first)."""
        self.service = other.service
        self.publisher = other.publisher
        self.level = other.level
        self.processors = other.processors
        self.max_lines = other.max_lines
        self.max_bytes = other.max_bytes
        self.release = other.release
        self.environment = other.environment
        self.fields = other.fields
        self.in_app = other.in_app

    def publish(self, value: bytes) -> None:
        try:
            self.publisher.publish(value, value_key(value))
        except Exception as exc:  # a publisher broke its contract: still never raise
            self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = repr(exc)


class Emitter(Protocol):
    """What a `Timer` and a `Job` use of the logger that made them (a `bound.Logger`)."""

    @property
    def core(self) -> Core: ...

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
    ) -> None: ...


def deliver(
    core: Core, entry: Entry | None, exc: BaseException | None, exception: Entry | None
) -> None:
    """Into the current request or job, or, outside one (or after it ended: a background task
    outliving its request), published on its own."""
    trace = CURRENT.get()
    if trace is not None:
        added = entry is None or trace.add_log(entry)
        if added and exception is not None:
            added = trace.add_exception(exc, exception)
        if added:
            return
    pair = (exc, exception) if exception is not None else None
    core.publish(
        standalone(
            core.service,
            entry,
            pair,
            max_lines=core.max_lines,
            max_bytes=core.max_bytes,
            fields=core.fields,
        )
    )
