"""Query parameters shared by the routes, the time window, and the refusal of unknown ones.

A parameter the route does not declare is an error (422 naming it), not silently ignored: a
typo such as `?hour=24` must not quietly answer for the default window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError

MAX_HOURS = 2160

Hours = Annotated[
    int, Query(ge=1, le=MAX_HOURS, description="the window: this many hours back from now")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many items")]
Release = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="only lines of invocations of this release: the logger's `release`, a"
        " Worker's script version",
    ),
]
Environment = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="only lines of invocations in this environment (the logger's"
        " `environment`, stored as the script tag `environment:<name>`)",
    ),
]
Script = Annotated[
    str | None, Query(min_length=1, max_length=256, description="only this script (Worker)")
]

LEVELS = ("debug", "info", "log", "warn", "error", "exception")
"""The levels stored: the console's (`console.debug`, `.info`, `.log`, `.warn`, `.error`) and
`exception`, one line per exception an invocation reported."""
LEVEL_ALIASES = {
    "warning": "warn",
    "err": "error",
    "fatal": "error",
    "critical": "error",
    "crit": "error",
    "information": "info",
    "informational": "info",
}
"""Other spellings of a stored level, as other loggers name them. Python's CRITICAL is stored as
`error` (the logger, like the console, has nothing above it), and so are `fatal` and `crit`."""
LEVEL_DOC = (
    "only lines of these levels: one or more of debug, info, log, warn, error, exception, "
    "comma-separated or repeated (`level=error,exception`: console errors and exceptions). "
    "Any case; warning is warn, err, fatal, critical and crit are error, information is info. "
    "`error` is console.error lines only: an exception is level `exception`."
)
Levels = Annotated[list[str] | None, Query(description=LEVEL_DOC)]


def stored_levels(asked: list[str] | None) -> list[str] | None:
    """The stored levels `level=` asks for, in the order of LEVELS; None when it asks for
    none. Unknown: a 422 naming it, never an answer that is empty because nothing matched."""
    if not asked:
        return None
    found: set[str] = set()
    for value in asked:
        for name in value.split(","):
            word = name.strip().lower()
            level = word if word in LEVELS else LEVEL_ALIASES.get(word)
            if level is None:
                shown = name if len(name) <= 40 else name[:40] + "..."
                raise RequestValidationError(
                    [
                        {
                            "type": "enum",
                            "loc": ("query", "level"),
                            "msg": f"unknown level {shown!r}; levels are {', '.join(LEVELS)}"
                            " (or warning, err, fatal, critical, crit, information), one or"
                            " more, comma-separated: level=error,exception gives console"
                            " errors and exceptions",
                            "input": value,
                        }
                    ]
                )
            found.add(level)
    return [level for level in LEVELS if level in found]


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime

    @classmethod
    def last(cls, hours: int, now: datetime | None = None) -> Window:
        until = now or datetime.now(UTC)
        return cls(until - timedelta(hours=hours), until)

    @property
    def first_hour(self) -> datetime:
        """The start of the hour holding `since`: rollups count whole hours."""
        return self.since.replace(minute=0, second=0, microsecond=0)


async def known_only(request: Request) -> None:
    """Refuse query parameters the route does not declare."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = {str(getattr(p, "alias", "")) for p in _all_query_params(dependant)}
    unknown = sorted(set(request.query_params) - declared)
    # PostgreSQL text cannot hold NUL: say so here, naming the parameter, not in a 500.
    with_nul = sorted(k for k, v in request.query_params.multi_items() if "\x00" in v)
    if with_nul:
        raise RequestValidationError(
            [
                {"type": "string_pattern_mismatch", "loc": ("query", name),
                 "msg": "must not contain a NUL character", "input": "..."}
                for name in with_nul
            ]
        )  # fmt: skip
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"unknown parameter {name!r}; this route takes: "
                    + (", ".join(sorted(declared)) or "none"),
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )


def _all_query_params(dependant: object) -> list[object]:
    found = list(getattr(dependant, "query_params", []))
    for sub in getattr(dependant, "dependencies", []):
        found += _all_query_params(sub)
    return found
