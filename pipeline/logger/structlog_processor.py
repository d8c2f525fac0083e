"""structlog users keep structlog: `TailpipeProcessor` hands each event dict to a tailpipe
logger, so the events land in the same traces, redacted the same way, with no second logging
API to learn.

    import structlog
    import pipeline.logger as tailpipe

    tailpipe.init(service="billing")
    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt=None),      # epoch seconds: kept as the time
        tailpipe.TailpipeProcessor(),                    # before the renderer
        structlog.dev.ConsoleRenderer(),
    ])

It is a processor, not a renderer: it returns the event dict unchanged, so the console or JSON
output a service already has keeps working beside it. To ship to tailpipe alone, end the chain
with it and give structlog `logger_factory=structlog.ReturnLoggerFactory()`. From an event
dict it takes:

- the level: `level` (from `add_log_level`), else the method called; `exception` and
  `critical` are `error`, `warning` is `warn`;
- the message: `event`;
- the exception: `exc_info` (True, an exception, or a `sys.exc_info()` tuple), and for
  `log.exception(...)` the exception being handled;
- the time: `timestamp` when it is epoch seconds (`TimeStamper(fmt=None)`); other forms stay in
  the fields and the time of the call is used;
- everything else, as the record's fields (keys starting with `_` are structlog's own and left
  out).

This module never imports structlog: a processor is a plain callable, and structlog is the
service's dependency, not tailpipe's.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from pipeline.logger.bound import Logger
from pipeline.logger.setup import get_logger

_LEVELS = {"exception": "error", "critical": "error", "fatal": "error", "warning": "warn"}
_OWN = frozenset(("event", "level", "exc_info", "timestamp"))


class TailpipeProcessor:
    """A structlog processor publishing each event through `logger` (default: the one
    `init` made, looked up per event)."""

    def __init__(self, logger: Logger | None = None) -> None:
        self.logger = logger

    def __call__(
        self, _logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        log = self.logger if self.logger is not None else get_logger()
        raw_level = event_dict.get("level")
        level = (raw_level if type(raw_level) is str else method_name).lower()
        level = _LEVELS.get(level, level)
        exc_info = event_dict.get("exc_info")
        if exc_info is None and method_name == "exception":
            exc_info = True
        if type(exc_info) is tuple:
            exc_info = exc_info[1] if len(exc_info) == 3 else None
        fields = {
            key: value
            for key, value in event_dict.items()
            if key not in _OWN and not key.startswith("_")
        }
        stamp = event_dict.get("timestamp")
        timestamp_ms: int | None = None
        if type(stamp) is float or type(stamp) is int:
            timestamp_ms = int(stamp * 1000)
        elif stamp is not None:
            fields["timestamp"] = stamp
        log.emit(
            level,
            event_dict.get("event", ""),
            context=fields,
            exc_info=exc_info if isinstance(exc_info, bool | BaseException) else None,
            timestamp_ms=timestamp_ms,
        )
        return event_dict
