"""The errors tailpipe raises on purpose.

Anything else escaping a command is a bug. Every error class of the package is in this tree
(`tests/test_errors.py` holds it to that); the ones that belong to one room live there and are
named with their module::

    TailpipeError                      base: caught by the CLI, printed as one line (exit 1)
    ├── SettingsError                  a setting is missing or malformed (exit 2)
    ├── MigrationError                 a migration cannot be applied, or was edited after it was
    ├── alerts.email.Refused           an SMTP server refused an alert for good (5xx, a failed
    │                                  login, no STARTTLS): dropped, not retried
    ├── DependencyError                Kafka, PostgreSQL or S3 did not answer: retried, never
    │   │                              the data's fault
    │   ├── deadletters.store.StoreUnavailable  the dead-letter store did not take or give an
    │   │                              object
    │   └── collector.sink.Unavailable Kafka cannot take a request's items now: 503, retry later
    ├── InputError                     what a producer or client sent cannot be taken as it is:
    │   │                              never retried unchanged
    │   ├── DecodeError                a message no accepted format describes: a dead letter
    │   ├── collector.rejection.Rejection  a request the collector refuses: 400, 401, 413
    │   └── api.cursor.InvalidCursor   a paging cursor forged, tampered with or stale: 422
    └── FlushAborted                   a flush stored nothing, for a reason that decides what
        │                              the replica does next (`replica.storing.Storing._failed`)
        ├── postgres.flush.PartitionsLost  another replica owns these partitions: drop, re-seek
        ├── postgres.dedup.ClaimRaced  another flush claimed an identity of this batch
        │                              meanwhile: retry, and find it stored
        ├── postgres.stream.StateRaced  another flush stored a streamed invocation's state
        │                              first: retry, and read it
        ├── postgres.writer.DeadLettersHeld  the dead-letter store failed: hold those partitions
        └── postgres.writer.GuardTripped  too many recent messages would be dead letters: stop

Control flow inside one function (`postgres.flush._Undo`, `postgres.replay._DryRun`) is no
error and stays out.
"""

from __future__ import annotations


class TailpipeError(Exception):
    """Base of every error tailpipe raises deliberately."""

    exit_code = 1


class SettingsError(TailpipeError):
    """A setting has a value it cannot take. The message names the setting."""

    exit_code = 2

    def __init__(self, name: str, expected: str, got: object) -> None:
        self.name = name
        self.expected = expected
        self.got = got
        shown = repr(got)
        if len(shown) > _SHOWN:  # one line of a terminal, whatever was given
            shown = f"{shown[:_SHOWN]}... ({len(shown)} characters)"
        super().__init__(f"{name}: expected {expected}, got {shown}")


_SHOWN = 100


class MigrationError(TailpipeError):
    """A schema migration failed, or an applied one no longer matches its file."""


class DependencyError(TailpipeError):
    """A service tailpipe needs did not answer."""


class InputError(TailpipeError):
    """What a producer or a client sent cannot be taken as it is; sending it again unchanged
    cannot help, so it is answered or dead-lettered, never retried."""


class FlushAborted(TailpipeError):
    """A flush stored nothing, and why decides what the replica does next."""


class DecodeError(InputError):
    """A message that no accepted format describes. Names the field (a JSON path) and the
    problem, so a dead-letter record says exactly what was wrong; `reason` is the kind of
    problem, from a fixed set, for metric labels (the problem quotes the input)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)

    @property
    def reason(self) -> str:
        # By how the problem starts: after its first words it may quote the input.
        problem = self.problem
        for start, reason in _REASONS:
            if problem.startswith(start):
                return reason
        if problem[:1].isdigit() or problem[:1] == "-":  # "<number> is negative", ...
            return "too_long" if problem.endswith("fit an index key") else "out_of_range"
        return "invalid"


_REASONS = (
    ("invalid JSON", "invalid_json"),
    ("expected", "wrong_type"),
    ("missing", "missing_field"),
    ("not a trace item", "unknown_format"),
    ("nested deeper", "too_deep"),
    ("empty message", "empty"),
)
DECODE_REASONS = (*(reason for _, reason in _REASONS), "out_of_range", "too_long", "invalid")
"""Every `DecodeError.reason`: the whole label set of `tailpipe_decode_failures_total`."""
