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
    problem, so a dead-letter record says exactly what was wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
