"""A stdlib `logging.Handler` that feeds a tailpipe logger, so existing `logging.info(...)`
calls end up in the same traces as the structured logger's.

Levels map to the envelope's (`WARNING` -> `warn`, `CRITICAL` -> `error`); `exc_info` becomes an
exception entry; fields passed with `extra=` become context, with the logger's name under
`logger`. Records of aiokafka (which the Kafka publisher itself causes) and of `tailpipe.logger`
(the publisher's own warnings: Kafka unreachable, records dropped) are skipped, and so is a
record emitted while this handler is already handling one in the same thread: none may feed
back into the publisher.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pipeline.logger.bound import Logger
from pipeline.logger.entry import level_name
from pipeline.logger.setup import get_logger

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class TailpipeHandler(logging.Handler):
    def __init__(
        self,
        logger: Logger | None = None,
        level: int = logging.NOTSET,
        *,
        ignore: tuple[str, ...] = ("aiokafka", "kafka", "tailpipe.logger"),
    ) -> None:
        super().__init__(level)
        self._logger = logger
        self.ignore = ignore
        self._busy = threading.local()

    @property
    def logger(self) -> Logger:
        """The logger given, else the one `init` made (looked up per record)."""
        return self._logger if self._logger is not None else get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if any(name == prefix or name.startswith(prefix + ".") for prefix in self.ignore):
            return
        if getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            context: dict[str, Any] = {"logger": name}
            for key, value in record.__dict__.items():
                if key not in _STANDARD and not key.startswith("_"):
                    context[key] = value
            exc = record.exc_info[1] if record.exc_info else None
            self.logger.emit(
                level_name(record.levelno),
                record.getMessage(),
                context=context,
                exc_info=exc,
                timestamp_ms=int(record.created * 1000),
            )
        except Exception as error:
            self.logger.core.failed(error)
        finally:
            self._busy.on = False
