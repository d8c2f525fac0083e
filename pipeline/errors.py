"""The errors tailpipe raises on purpose.

Anything else escaping a command is a bug. The tree::

    TailpipeError                 base: caught by the CLI, printed as one line
    ├── SettingsError             a setting is missing or malformed (exit code 2)
    ├── MigrationError            a migration cannot be applied or was edited after it was
    ├── DependencyError           Kafka, PostgreSQL or S3 could not be reached
    └── DecodeError               a message is not an accepted input format (bad data, not a bug)
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
        super().__init__(f"{name}: expected {expected}, got {got!r}")


class MigrationError(TailpipeError):
    """A schema migration failed, or an applied one no longer matches its file."""


class DependencyError(TailpipeError):
    """A service tailpipe needs did not answer."""


class DecodeError(TailpipeError):
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
