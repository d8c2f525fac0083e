"""The pipeline's own log lines: JSON objects with ts, level, event and the call's fields."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import errors

from pipeline import logconfig


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = logging.Logger.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in loggers.items():  # configure sets other libraries' levels too
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))


def _emit(fmt: str, stream: io.StringIO) -> None:
    logconfig.configure(fmt, "info", stream)
    log = logging.getLogger("tailpipe.example")
    log.debug("below the level")
    log.warning(
        "dependency failing",
        extra={"dependency": "postgres", "attempt": 3, "color_message": "\x1b[36mnoise\x1b[0m"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("flush failed", extra={"where": Path("/tmp/x")})


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_ts_level_event_and_fields() -> None:
    out = io.StringIO()
    _emit("auto", out)  # not a terminal: JSON
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["ts"].endswith("Z")
    assert "T" in first["ts"]
    assert {k: first[k] for k in ("level", "logger", "event", "dependency", "attempt")} == {
        "level": "warning", "logger": "tailpipe.example", "event": "dependency failing",
        "dependency": "postgres", "attempt": 3,
    }  # fmt: skip
    assert "color_message" not in first, "uvicorn's coloured copy of the line is dropped"
    # A traceback stays inside its line; a field JSON cannot hold is written as text.
    assert second["level"] == "error"
    assert second["where"] == "/tmp/x"
    assert "ValueError: boom" in second["exc"]


@pytest.mark.usefixtures("restore_root")
def test_text_on_a_terminal() -> None:
    out = Terminal()
    _emit("auto", out)
    lines = out.getvalue().splitlines()
    assert "WARNING" in lines[0]
    assert "example" in lines[0]
    assert lines[0].endswith("dependency failing  dependency=postgres attempt=3")  # no colours
    assert "Traceback" in out.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_format_forced_either_way() -> None:
    out = Terminal()
    _emit("json", out)
    assert all(orjson.loads(line) for line in out.getvalue().splitlines()[:1])
    plain = io.StringIO()
    _emit("text", plain)
    assert plain.getvalue().split()[1] == "WARNING"


# -- other libraries' lines --------------------------------------------------------------------
# aiokafka's group membership at info is chatter to an operator, and some of its errors are what
# every healthy first start looks like. The records here are the ones it logs (logger name,
# level, message and arguments as in aiokafka/consumer/group_coordinator.py).
COORDINATOR = "aiokafka.consumer.group_coordinator"
ELECTION = (COORDINATOR, logging.ERROR, "Group Coordinator Request failed: %s",
            errors.GroupCoordinatorNotAvailableError())  # fmt: skip
BENIGN = [
    ELECTION,
    (COORDINATOR, logging.ERROR, "Group Coordinator Request failed: %s",
     errors.NotCoordinatorForGroupError()),
    (COORDINATOR, logging.WARNING, "Marking the coordinator dead (node %s)for group %s.", 1,
     "tailpipe"),
    (COORDINATOR, logging.WARNING, "Heartbeat failed for group %s because it is rebalancing",
     "tailpipe"),
    (COORDINATOR, logging.ERROR,
     "OffsetCommit failed for group %s due to group error (%s), will rejoin", "tailpipe",
     errors.RebalanceInProgressError("tailpipe")),
]  # fmt: skip
CHATTER = [
    (COORDINATOR, logging.INFO, "Discovered coordinator %s for group %s", 1, "tailpipe"),
    (COORDINATOR, logging.INFO, "Joined group '%s' (generation %s) with member_id %s",
     "tailpipe", 1, "aiokafka-0.14.0-1"),
    (COORDINATOR, logging.INFO, "Setting newly assigned partitions %s for group %s", {0, 1},
     "tailpipe"),
    ("aiokafka.consumer.subscription_state", logging.INFO, "Updating subscribed topics to: %s",
     frozenset({"tail-events"})),
]  # fmt: skip


def _emit_as(record: tuple[Any, ...], created: float = 1_000.0) -> None:
    """Log `record` (logger, level, message, *args) as the library would, at `created`."""
    name, level, msg, *args = record
    logger = logging.getLogger(name)
    if logger.isEnabledFor(level):  # else, as in the library's own call, nothing is made
        made = logger.makeRecord(name, level, "aiokafka.py", 1, msg, tuple(args), None)
        made.created = created
        logger.handle(made)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_root")
def test_coordinator_not_available_on_a_first_start_is_debug_not_error() -> None:
    out = io.StringIO()
    logconfig.configure("json", "info", out)
    _emit_as(ELECTION)
    assert out.getvalue() == "", "a healthy first start prints no error"

    verbose = io.StringIO()
    logconfig.configure("json", "debug", verbose)
    _emit_as(ELECTION)
    assert [(line["level"], line["logger"], line["event"]) for line in _lines(verbose)] == [
        ("debug", COORDINATOR,
         "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"),
    ]  # fmt: skip


@pytest.mark.usefixtures("restore_root")
def test_other_benign_start_up_lines_are_debug() -> None:
    out = io.StringIO()
    logconfig.configure("json", "info", out)
    for record in BENIGN:
        _emit_as(record)
    assert out.getvalue() == ""
    verbose = io.StringIO()
    logconfig.configure("json", "debug", verbose)
    for record in BENIGN:
        _emit_as(record)
    assert [line["level"] for line in _lines(verbose)] == ["debug"] * len(BENIGN)


@pytest.mark.usefixtures("restore_root")
def test_aiokafka_info_is_not_printed_at_info() -> None:
    out = io.StringIO()
    logconfig.configure("json", "info", out)
    for record in CHATTER:
        _emit_as(record)
    assert out.getvalue() == ""
    verbose = io.StringIO()
    logconfig.configure("json", "debug", verbose)
    for record in CHATTER:
        _emit_as(record)
    assert [line["level"] for line in _lines(verbose)] == ["info"] * len(CHATTER)


@pytest.mark.usefixtures("restore_root")
def test_our_lines_and_real_aiokafka_errors_keep_their_level() -> None:
    out = io.StringIO()
    logconfig.configure("json", "info", out)
    logging.getLogger("tailpipe.consumer").info("partitions assigned", extra={"partitions": [0]})
    logging.getLogger("tailpipe.outage").warning("dependency failing; retrying")
    # The benign line's logger and words, with an error that will not pass by itself.
    _emit_as((COORDINATOR, logging.ERROR, "Group Coordinator Request failed: %s",
              errors.GroupAuthorizationFailedError("tailpipe")))  # fmt: skip
    _emit_as(("aiokafka", logging.ERROR, 'Unable connect to "%s:%s": %s', "127.0.0.1", 1,
              ConnectionRefusedError(111, "Connection refused")))  # fmt: skip
    _emit_as((COORDINATOR, logging.WARNING, "Heartbeat failed: local member_id was not "
              "recognized; resetting and re-joining group"))  # fmt: skip
    assert [(line["logger"], line["level"]) for line in _lines(out)] == [
        ("tailpipe.consumer", "info"),
        ("tailpipe.outage", "warning"),
        (COORDINATOR, "error"),
        ("aiokafka", "error"),
        (COORDINATOR, "warning"),
    ]


@pytest.mark.usefixtures("restore_root")
def test_a_coordinator_failure_that_persists_is_an_error_again() -> None:
    """Benign while the coordinator is being elected; a broker that never elects one (its
    offsets topic cannot be created, say) is a real failure, and shows as one."""
    out = io.StringIO()
    logconfig.configure("json", "info", out)
    start, grace = 1_000.0, logconfig.BENIGN_GRACE_S
    for second in range(0, int(grace), 2):  # aiokafka retries every 100 ms; enough here
        _emit_as(ELECTION, start + second)
    assert out.getvalue() == "", "within the grace: still the election"
    _emit_as(ELECTION, start + grace + 1)
    assert [(line["level"], line["failing_for_s"]) for line in _lines(out)] == [
        ("error", int(grace + 1))
    ]
    # Once that has passed (nothing for longer than the grace), an election is benign again.
    _emit_as(ELECTION, start + 3 * grace)
    assert len(_lines(out)) == 1


@pytest.mark.usefixtures("restore_root")
def test_a_reset_offset_is_a_warning() -> None:
    """aiokafka says at info that it moved a partition whose offset left the log: the stored
    offset points at messages the topic no longer holds (retention ran ahead of the replicas)."""
    out = io.StringIO()
    logconfig.configure("json", "info", out)
    _emit_as(("aiokafka.consumer.fetcher", logging.INFO,
              "Fetch offset %s is out of range for partition %s, resetting offset", 42,
              "TopicPartition(topic='tail-events', partition=3)"))  # fmt: skip
    assert [line["level"] for line in _lines(out)] == ["warning"]


@pytest.mark.usefixtures("restore_root")
def test_the_level_still_applies_to_other_libraries() -> None:
    out = io.StringIO()
    logconfig.configure("json", "error", out)
    _emit_as((COORDINATOR, logging.WARNING, "Heartbeat failed: local member_id was not "
              "recognized; resetting and re-joining group"))  # fmt: skip
    logging.getLogger("tailpipe.consumer").warning("a warning of ours")
    _emit_as(("aiokafka", logging.ERROR, "Unable to update metadata from %s", [1]))
    assert [line["level"] for line in _lines(out)] == ["error"]
