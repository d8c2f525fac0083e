"""Versioned SQL migrations: `schema/NNNN_name.sql`, applied in order, each exactly once.

Concurrency: the whole run holds a session-level advisory lock keyed by the schema, so any
number of replicas may start at once; the first applies, the others wait and then find nothing
to do. Each file runs in its own transaction together with its `schema_migrations` row, so a
failed migration leaves no trace. An applied file whose checksum changed is an error: editing
history is reported, never silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pipeline.errors import MigrationError
from pipeline.postgres.connect import quote_ident

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @classmethod
    def from_file(cls, path: Path) -> Migration:
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: expected a name like 0001_create_tables.sql")
        data = path.read_bytes()
        return cls(int(match[1]), match[2], data.decode(), hashlib.sha256(data).hexdigest())


def default_directory() -> Path:
    """`schema/` of a source checkout, else the copy packaged inside the wheel."""
    package = Path(__file__).resolve().parents[1]  # pipeline/, above postgres/
    checkout = package.parent / "schema"
    return checkout if checkout.is_dir() else package / "_schema"


def discover(directory: Path) -> list[Migration]:
    migrations = [Migration.from_file(p) for p in sorted(directory.glob("*.sql"))]
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migration files share a version number")
    return migrations


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key per schema."""
    digest = hashlib.sha256(f"tailpipe.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def apply(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is missing; returns the names applied (empty when up to date)."""
    key = lock_key(schema)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        changed = [
            f"{m.version:04d}_{m.name}.sql"
            for m in migrations
            if m.version in applied and applied[m.version]["checksum"] != m.checksum
        ]
        if changed:
            raise MigrationError(
                f"{', '.join(changed)} changed after being applied (checksum differs); "
                "restore the file and put the change in a new migration"
            )
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            label = f"{migration.version:04d}_{migration.name}"
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{label}.sql failed: {exc}") from exc
            done.append(label)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
