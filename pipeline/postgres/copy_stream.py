"""The binary COPY of the raw rows: encoded by the native core where it is installed, by
asyncpg otherwise, into the same bytes.

asyncpg's `copy_records_to_table` calls a codec per value, about a tenth of a replica's CPU. The
native `CopyEncoder` (`pipeline/native/src/copy.rs`) writes a slice of rows per call, from the
column types below, as the COPY streams: memory holds one slice's bytes, not the table's. A
value it does not take exactly as asyncpg would (a type other than the column's usual one)
raises `ValueError`: the COPY is abandoned, its savepoint rolled back, and the table's rows go
to asyncpg, so PostgreSQL stores the same rows, and refuses the same ones, either way.

`COLUMN_TYPES` must match the migrated schema: `tests/postgres/test_copy_stream.py` reads the
types back from PostgreSQL, and stores rows both ways to compare what PostgreSQL holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from pipeline.native import CopyEncode, load_copy_encoder
from pipeline.transform.batch import Row

_TS = "timestamp with time zone"
COLUMN_TYPES: dict[str, tuple[str, ...]] = {
    "tail_events": (
        _TS, "text", "text", "text", "text", "text", "smallint", "integer", "integer",
        "integer", "integer", "boolean", "text", "text", "text", "text[]", "text", "jsonb",
        "text", "integer", "bigint", "integer", "bytea", "bytea",
    ),
    "tail_logs": (
        _TS, "text", "text", "text", "text", "text", "jsonb", "text", "text", "text", "text",
        "text", "integer", "bigint", "integer", "integer", "bytea", "bytea", _TS,
    ),
    "tail_spans": (
        _TS, "text", "bytea", "bytea", "bytea", "text", "smallint", "bigint", "smallint", "text",
        "text", "jsonb", "jsonb", "jsonb", "jsonb", "text", "integer", "bigint", "integer",
    ),
    "ingest_keys": (_TS, "bigint"),
}  # fmt: skip
COLUMN_TYPES["stream_logs"] = (*COLUMN_TYPES["tail_logs"], "text")
for _attr in ("events", "logs", "spans"):
    COLUMN_TYPES[_attr] = COLUMN_TYPES[f"tail_{_attr}"]
"""Per raw table, its columns' types (`format_type`), in the order of its columns in
`flush.RAW_TABLES` (`EVENT_COLUMNS`, `LOG_COLUMNS`, `SPAN_COLUMNS`); a streamed invocation's
lines (`stream_logs`: `tail_logs` and its `invocation_id`); and the identities'
(`pipeline.postgres.dedup`: ts, digest)."""
SLICE_ROWS = 2_000
"""Rows per COPY data message (about 0.5 MiB of log rows): asyncpg drains the socket between
them, so memory holds one slice's bytes."""

_ENCODERS = {table: load_copy_encoder(types) for table, types in COLUMN_TYPES.items()}


class _NotEncoded(Exception):
    """A value the native encoder leaves to asyncpg."""


async def copy_rows(
    conn: asyncpg.Connection,
    table: str,
    columns: tuple[str, ...],
    rows: list[Row],
    types: str | None = None,
) -> str:
    """COPY `rows` into `columns` of `table` (of the types `COLUMN_TYPES[types or table]`, in
    their order); returns which encoder wrote them, `native` or `asyncpg`."""
    encode = _ENCODERS[types or table]
    if encode is not None:
        try:
            async with conn.transaction():
                source = _stream(encode, rows)
                await conn.copy_to_table(table, source=source, columns=columns, format="binary")
        except _NotEncoded:
            pass
        else:
            return "native"
    await conn.copy_records_to_table(table, records=rows, columns=columns)
    return "asyncpg"


async def _stream(encode: CopyEncode, rows: list[Row]) -> AsyncIterator[bytes]:
    end = len(rows)
    for start in range(0, max(end, 1), SLICE_ROWS):
        stop = start + SLICE_ROWS
        try:
            yield encode(rows[start:stop], start == 0, stop >= end)
        except ValueError as error:
            raise _NotEncoded(str(error)) from error
