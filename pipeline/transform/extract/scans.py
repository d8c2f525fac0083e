"""Repository scans that an invocation's logs report: one `Scan` per state change.

From the structured logger's typed record (`LogLine.kind == "scan"`, here) and from free text
such as `scan completed repo=acme/api files=120 duration_ms=3400` (the `scan` rule of
`rules.toml`). A scan whose status is not one of `STATUSES` is not a scan state this pipeline
can count, so no `Scan` is made for it.
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.formats.invocation import LogLine
from pipeline.transform.extract import values

STATUSES = frozenset(("started", "completed", "failed"))


class Scan(NamedTuple):
    """A NamedTuple for the reason `ApiCall` is one: cheap to build on the hot path."""

    repo: str | None
    status: str
    """One of `started`, `completed`, `failed`."""
    files: int | None
    duration_ms: float | None
    ts_ms: int | None
    """The log line's time, else the invocation's."""


def scan_status(raw: str | None) -> str | None:
    """The status in canonical form, or None when it is not a scan state."""
    if raw is None:
        return None
    if raw in STATUSES:
        return raw
    lowered = raw.lower()  # a logger may write "Completed"; only then pay for lower()
    return lowered if lowered in STATUSES else None


def scan_record(line: LogLine, ts_ms: int | None) -> Scan | None:
    """The structured logger's `scan` record; fields of the wrong type read as None."""
    kind = line.kind
    if kind is None or kind != "scan" or line.data is None:  # `is None` first: the common case
        return None
    get = line.data.get
    status = scan_status(values.text(get("status")))
    if status is None:
        return None
    return Scan(
        values.text(get("repo")),
        status,
        values.count(get("files")),
        values.duration(get("duration_ms")),
        ts_ms,
    )
