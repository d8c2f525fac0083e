"""PostgreSQL connections built from the settings.

Every connection sets `search_path` to the configured schema, so SQL (migrations included) never
names a schema and one server can hold several independent tailpipe installations (the tests
use a schema each).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from pipeline.errors import DependencyError
from pipeline.parse import mask_url_password
from pipeline.settings import Settings


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def server_settings(settings: Settings) -> dict[str, str]:
    return {
        "application_name": "tailpipe",
        "search_path": f"{quote_ident(settings.postgres_schema)}, public",
    }


async def connect(settings: Settings) -> asyncpg.Connection:
    """One connection, or a DependencyError that says what failed and what to try."""
    where = mask_url_password(settings.postgres_dsn)
    try:
        return await asyncpg.connect(
            settings.postgres_dsn,
            timeout=settings.connect_timeout,
            server_settings=server_settings(settings),
        )
    except (TimeoutError, OSError) as exc:
        host = urlsplit(settings.postgres_dsn).netloc.rpartition("@")[2] or "the default host"
        raise DependencyError(
            f"PostgreSQL at {host} is unreachable ({type(exc).__name__}: {exc}); "
            "is the server running? (`make stack-up`, or set TAILPIPE_POSTGRES_DSN)"
        ) from exc
    except asyncpg.InvalidCatalogNameError as exc:
        raise DependencyError(f"PostgreSQL {where}: {exc}; create the database first") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DependencyError(f"PostgreSQL {where}: {exc}") from exc


def rejects_data(exc: BaseException) -> bool:
    """Whether PostgreSQL, or asyncpg encoding a value for it, refused the data itself (a bad
    byte sequence, a NUL in text, a number out of range, a value too long, a check that fails):
    the same rows fail every time, so they are dead-lettered, never retried. A duplicate key is
    not bad data (the rows are stored already) and is not included."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return False
    return isinstance(
        exc,
        asyncpg.DataError  # class 22
        | asyncpg.IntegrityConstraintViolationError  # class 23: check, not null, foreign key
        | asyncpg.ProgramLimitExceededError  # 54000: e.g. a value too long for its index
        | ValueError  # asyncpg's client-side DataError: a value its codec cannot encode
        | OverflowError
        | TypeError,
    )
