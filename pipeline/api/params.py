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
Script = Annotated[
    str | None, Query(min_length=1, max_length=256, description="only this script (Worker)")
]


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
