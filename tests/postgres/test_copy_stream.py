"""The native COPY encoder (`pipeline/native/src/copy.rs`) against asyncpg's, on the real
PostgreSQL: the column types it writes are the migrated schema's, rows stored through either
are the same rows, and whatever it does not take goes to asyncpg, refused or stored as before."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.native import load_copy_encoder
from pipeline.postgres import copy_stream, dedup, flush
from pipeline.postgres.day_partitions import PartitionManager
from pipeline.settings import Settings

_COLUMNS = {table: columns for table, attr, columns in flush.RAW_TABLES if attr != "stream_logs"}
_SELECT_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


async def test_the_column_types_are_the_migrated_schemas(
    migrated: Settings, db: asyncpg.Connection
) -> None:
    for table, attr, columns in (*flush.RAW_TABLES, (dedup.TABLE, dedup.TABLE, ("ts", "digest"))):
        found = {r[0]: r[1] for r in await db.fetch(_SELECT_TYPES, table)}
        assert tuple(found[c] for c in columns) == copy_stream.COLUMN_TYPES[attr], attr


def test_a_full_install_encodes_natively() -> None:
    assert all(encode is not None for encode in copy_stream._ENCODERS.values())


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_ms = st.integers(-(2**32) * 1000 + 1, 2**32 * 1000 - 1) | st.integers(
    1_700_000_000_000, 1_800_000_000_000
)
_stamp = _ms.map(lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
).map(lambda v: orjson.dumps(v).decode())


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_int32 = st.integers(-(2**31), 2**31 - 1)
event_rows = st.tuples(
    _stamp, _text, _text, _text, _opt(_text), _opt(_text),
    _opt(st.integers(-(2**15), 2**15 - 1)), _opt(_int32), _opt(_int32), _int32, _int32,
    st.booleans(), _opt(_text), _opt(_text), _opt(_text),
    _opt(st.lists(_opt(_text), min_size=1, max_size=4)), _text, _opt(_json), _text, _int32,
    st.integers(-(2**63), 2**63 - 1), _int32, _opt(st.binary(max_size=16)),
    _opt(st.binary(max_size=8)),
)  # fmt: skip
log_rows = st.tuples(
    _stamp, _text, _text, _text, _text, _text, _opt(_json), _opt(_text), _opt(_text),
    _opt(_text), _opt(_text), _text, _int32, st.integers(-(2**63), 2**63 - 1), _int32, _int32,
    _opt(st.binary(max_size=16)), _opt(st.binary(max_size=8)), _opt(_stamp),
)  # fmt: skip


async def _stored(db: asyncpg.Connection, table: str, rows: list[tuple[Any, ...]]) -> list[Any]:
    """`rows` written into two plain copies of `table`, natively and by asyncpg; what each
    holds, in order."""
    columns = _COLUMNS[table]
    encode = load_copy_encoder(copy_stream.COLUMN_TYPES[table])
    assert encode is not None
    held = []
    async with db.transaction():
        for how in ("native", "asyncpg"):
            copy = f"{table}_{how}"
            await db.execute(f"CREATE TEMP TABLE {copy} (LIKE {table}) ON COMMIT DROP")
            if how == "native":
                chunks = [  # one row per piece: many COPY data messages
                    encode(rows[i : i + 1], i == 0, i == len(rows) - 1) for i in range(len(rows))
                ]
                await db.copy_to_table(
                    copy, source=_aiter(chunks), columns=columns, format="binary"
                )
            else:
                await db.copy_records_to_table(copy, records=rows, columns=columns)
            held.append(await db.fetch(f"SELECT * FROM {copy} ORDER BY ctid"))
    return held


async def _aiter(chunks: list[bytes]) -> Any:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize(("table", "rows"), [("tail_events", event_rows), ("tail_logs", log_rows)])
async def test_native_and_asyncpg_store_the_same_rows(
    migrated: Settings, db: asyncpg.Connection, table: str, rows: st.SearchStrategy[Any]
) -> None:
    examples: list[list[tuple[Any, ...]]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(rows, min_size=1, max_size=12))
    def collect(batch: list[tuple[Any, ...]]) -> None:
        examples.append(batch)

    collect()
    for batch in examples:
        native, reference = await _stored(db, table, batch)
        assert [tuple(r) for r in native] == [tuple(r) for r in reference]


def test_what_the_encoder_does_not_take_it_refuses_before_writing() -> None:
    encode = load_copy_encoder(copy_stream.COLUMN_TYPES["tail_logs"])
    assert encode is not None
    row = _a_log_row(datetime(2026, 12, 5, tzinfo=UTC))
    assert encode([row], True, True).startswith(b"PGCOPY\n\xff\r\n\x00")
    assert encode([row], False, True).endswith(b"\xff\xff")
    for column, value in [
        (0, datetime(2026, 12, 5)),  # naive: asyncpg's conversion decides
        (0, datetime(2026, 12, 5, tzinfo=timezone(timedelta(hours=2)))),
        (1, 42),  # not a str
        (12, True),  # a bool is not an int here
        (12, 2**31),  # beyond integer
        (16, bytearray(b"x")),
    ]:
        bad = list(row)
        bad[column] = value
        with pytest.raises(ValueError, match=f"row 1, column {column}"):
            encode([row, tuple(bad)], True, False)


def _a_log_row(ts: datetime) -> tuple[Any, ...]:
    return (
        ts, "svc", "fetch", "ok", "info", "hello", '{"a":1}', None, None, None, None,
        "topic", 0, 7, 0, 0, None, None, ts,
    )  # fmt: skip


async def test_a_row_the_encoder_leaves_is_copied_by_asyncpg(
    migrated: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also when the COPY had sent slices before the row the encoder refuses: the savepoint
    takes them back, and asyncpg copies every row once, in the caller's transaction."""
    monkeypatch.setattr(copy_stream, "SLICE_ROWS", 2)
    day = date(2026, 12, 5)
    await PartitionManager().ensure(db, {day})
    naive = _a_log_row(datetime(2026, 12, 5, 10))
    aware = _a_log_row(datetime(2026, 12, 5, 10, tzinfo=UTC))

    async def copy(rows: list[tuple[Any, ...]]) -> str:
        return await copy_stream.copy_rows(db, "tail_logs", _COLUMNS["tail_logs"], rows)

    async with db.transaction():
        assert await copy([aware] * 5) == "native"
        assert await copy([aware] * 4 + [naive]) == "asyncpg"
    assert await db.fetchval("SELECT count(*) FROM tail_logs") == 10
    wrong = list(aware)
    wrong[1] = 42
    with pytest.raises(TypeError, match="expected str, got int"):  # asyncpg's, as before
        await copy([tuple(wrong)])
