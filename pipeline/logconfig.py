"""The pipeline's own log lines: JSON by default, readable on a terminal.

A JSON line is `{"ts", "level", "logger", "event", ...fields}`, one object per line, so a log
shipper can index it as it is. `event` is the message; the fields are what the call passed in
`extra=` (`log.warning("dependency failing", extra={"dependency": "postgres"})`): grep and
alerting work on stable names, not on parsing prose. A traceback is one `exc` field, never
extra lines. `TAILPIPE_LOG_FORMAT=auto` (the default) picks text when stderr is a terminal.

Every long-running command calls `configure` once; uvicorn is started with `log_config=None`
so its own lines come through here too.

Other libraries' lines are held to what an operator needs. Their loggers (`QUIET`) print from
`warning` up unless `TAILPIPE_LOG_LEVEL=debug`: aiokafka's group membership at info ("Joined
group", "Setting newly assigned partitions") is said once, in our words, by `partitions
assigned`. A few of their records are rewritten (`REWRITES`, matched by logger name and message):
the errors every healthy start of a consumer group logs while Kafka elects the group's
coordinator or rebalances are `debug` as long as they pass within `BENIGN_GRACE_S`, and keep
their level (with `failing_for_s`) once they persist; a record that matters but is logged at info
is raised to `warning`. Our own records keep their level.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

FORMATS = ("auto", "json", "text")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has: anything else on a record came from `extra=`. uvicorn adds
# `color_message`, its own line again with terminal colours: noise in a log store.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # default=str: a field we did not foresee (a path, an exception) must not lose the line.
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`12:00:01.250 WARNING consumer  dependency failing  dependency=postgres attempt=3`."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        name = record.name.removeprefix("tailpipe.")
        extra = " ".join(f"{k}={_short(v)}" for k, v in fields(record).items())
        line = f"{clock}.{int(record.created % 1 * 1000):03d} {record.levelname:<7} {name:<10} "
        line += record.getMessage() + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return repr(text) if " " in text else text


# Libraries whose info lines are chatter to an operator: `warning` and up unless the level is
# `debug`. uvicorn's own start and stop lines (`uvicorn.error`) are the API's and the collector's
# "listening on": they stay.
QUIET = (
    "aiokafka", "kafka", "asyncio", "asyncpg", "botocore", "aiobotocore", "s3transfer",
    "urllib3", "httpx", "httpcore", "uvicorn.access",
)  # fmt: skip

BENIGN_GRACE_S = 60.0
"""How long a benign record may repeat before it is a failure (and how long after the last one
the next starts a new streak). A coordinator election takes well under a second, a rebalance a
few heartbeats; a broker that cannot elect a coordinator at all logs the same line forever."""


@dataclass(frozen=True)
class Rewrite:
    """Records of `logger` at `level_from` whose message matches `pattern` (from its start) are
    logged at `level_to`; with `grace_s`, only while they have repeated for less than that."""

    logger: str
    level_from: int
    pattern: re.Pattern[str]
    level_to: int
    why: str
    grace_s: float | None = None


_COORDINATOR = "aiokafka.consumer.group_coordinator"
REWRITES = (
    Rewrite(
        _COORDINATOR, logging.ERROR,
        re.compile(r"Group Coordinator Request failed: \[Error 1[456]\] (GroupLoadInProgress"
                   r"|GroupCoordinatorNotAvailable|NotCoordinatorForGroup)Error$"),
        logging.DEBUG, "the group's coordinator is being elected or loaded (a broker's first "
        "group: the offsets topic is being created), or moved; aiokafka retries",
        BENIGN_GRACE_S,
    ),
    Rewrite(
        _COORDINATOR, logging.WARNING,
        re.compile(r"Marking the coordinator dead \(node \S+\) ?for group \S+\.$"),
        logging.DEBUG, "follows a coordinator error; aiokafka looks it up again at once",
        BENIGN_GRACE_S,
    ),
    Rewrite(
        _COORDINATOR, logging.WARNING,
        re.compile(r"Heartbeat failed for group \S+ (because it is rebalancing|: coordinator "
                   r"\(node \S+\) is either not started or not valid)$"),
        logging.DEBUG, "a replica joined or left, or the coordinator moved: `partitions "
        "assigned` says how it ended",
        BENIGN_GRACE_S,
    ),
    Rewrite(
        _COORDINATOR, logging.ERROR,
        re.compile(r"OffsetCommit failed for group \S+ due to group error \(\[Error 27\] "
                   r"RebalanceInProgressError"),
        logging.DEBUG, "the commit is only a copy for lag tools, made again by the next flush "
        "(`Kafka commit skipped`); the offsets that count are in PostgreSQL",
        BENIGN_GRACE_S,
    ),
    Rewrite(
        "aiokafka.consumer.fetcher", logging.INFO,
        re.compile(r"Fetch offset \S+ is out of range for partition .*, resetting offset$"),
        logging.WARNING, "the stored offset is not in the topic any more (retention removed "
        "messages before they were stored, or the topic was recreated): the replica goes on "
        "from the earliest message",
    ),
)  # fmt: skip


class Levels(logging.Filter):
    """The handler's filter: applies REWRITES, then the configured level to every record."""

    def __init__(self, level: int, rewrites: tuple[Rewrite, ...] = REWRITES) -> None:
        super().__init__()
        self.level = level
        self._by_logger: dict[str, list[Rewrite]] = {}
        for rewrite in rewrites:
            self._by_logger.setdefault(rewrite.logger, []).append(rewrite)
        self._streaks: dict[Rewrite, tuple[float, float]] = {}  # first and last record
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        for rewrite in self._by_logger.get(record.name, ()):
            if record.levelno == rewrite.level_from and rewrite.pattern.match(record.getMessage()):
                self._rewrite(rewrite, record)
                break
        return record.levelno >= self.level

    def _rewrite(self, rewrite: Rewrite, record: logging.LogRecord) -> None:
        if rewrite.grace_s is not None:
            with self._lock:
                first, last = self._streaks.get(rewrite, (record.created, record.created))
                if record.created - last > rewrite.grace_s:
                    first = record.created  # the last streak passed: this is a new one
                self._streaks[rewrite] = (first, record.created)
            if record.created - first > rewrite.grace_s:
                record.failing_for_s = int(record.created - first)
                return  # persisting: a real failure, at the library's level
        record.levelno = rewrite.level_to
        record.levelname = logging.getLevelName(rewrite.level_to)


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record (ours, aiokafka's, uvicorn's) to `stream` in the chosen format,
    other libraries' held to `warning` (see QUIET and REWRITES) unless `level` is debug."""
    stream = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    threshold = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # The level is the filter's: a record it rewrites is judged by its new level.
    handler.addFilter(Levels(threshold))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name, own in library_levels(threshold).items():
        logging.getLogger(name).setLevel(own)


def library_levels(threshold: int) -> dict[str, int]:
    """The level of each QUIET library's logger (NOTSET: the root's) for a configured level."""
    if threshold <= logging.DEBUG:
        return dict.fromkeys({*QUIET, *(r.logger for r in REWRITES)}, logging.NOTSET)
    levels = dict.fromkeys(QUIET, max(logging.WARNING, threshold))
    for r in REWRITES:  # a record raised to warning must still be made at its own level
        if r.level_to > r.level_from:
            levels[r.logger] = min(levels.get(r.logger, threshold), r.level_from)
    return levels
