"""`tailpipe check`: reach Kafka, PostgreSQL and the dead-letter store, one line each.

The probes run concurrently under a deadline each, so a dead dependency costs seconds, not a
hang, and one failure never hides the state of the others.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.deadletters import s3
from pipeline.errors import DependencyError
from pipeline.kafka import clients
from pipeline.postgres import migrate
from pipeline.postgres.connect import connect, quote_ident
from pipeline.settings import Settings


@dataclass(frozen=True, slots=True)
class Result:
    dependency: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.dependency:<9} {'OK' if self.ok else 'FAILED':<7} {self.detail}"


async def check_kafka(settings: Settings) -> str:
    info = await clients.describe(settings)
    missing = [t for t in (settings.topic, settings.alerts_topic) if t not in info.topics]
    topics = (
        f"topics {settings.topic}, {settings.alerts_topic} exist"
        if not missing
        else f"missing topic(s) {', '.join(missing)}: run `tailpipe topics create`"
    )
    return f"{settings.kafka_bootstrap}: {info.brokers} broker(s), {topics}"


async def check_postgres(settings: Settings) -> str:
    conn = await connect(settings)
    try:
        version = await conn.fetchval("SHOW server_version")
        applied = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            settings.postgres_schema,
            "schema_migrations",
        )
        if applied:
            applied = await conn.fetchval(
                f"SELECT count(*) FROM {quote_ident(settings.postgres_schema)}.schema_migrations"
            )
    finally:
        await conn.close()
    known = len(migrate.discover(migrate.default_directory()))
    state = f"{applied}/{known} migrations applied"
    if applied < known:
        state += ": run `tailpipe migrate`"
    address = urlsplit(settings.postgres_dsn)
    where = f"{address.hostname}:{address.port or 5432}{address.path}"
    return f"PostgreSQL {version} at {where}, schema {settings.postgres_schema}, {state}"


async def check_dead_letters(settings: Settings) -> str:
    parts = urlsplit(settings.dlq_url)
    if parts.scheme == "file":
        return await asyncio.to_thread(_check_directory, Path(parts.path))
    endpoint = settings.s3_endpoint or "AWS S3"
    try:
        async with s3.client(settings) as client:
            await client.head_bucket(Bucket=settings.dlq_bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        hint = "create it" if code in ("404", "NoSuchBucket") else "check the S3 credentials"
        raise DependencyError(f"{endpoint}: bucket {settings.dlq_bucket}: {code} ({hint})") from exc
    except BotoCoreError as exc:
        raise DependencyError(
            f"{endpoint} is unreachable ({type(exc).__name__}); is it running? "
            "(`make stack-up`, or set TAILPIPE_S3_ENDPOINT)"
        ) from exc
    return f"{endpoint}: bucket {settings.dlq_bucket} reachable"


def _check_directory(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
        raise DependencyError(f"{directory} is not writable by this user")
    return f"dead letters to directory {directory} (writable)"


async def _probe(
    name: str, probe: Callable[[Settings], Awaitable[str]], settings: Settings
) -> Result:
    deadline = settings.connect_timeout * 2 + 1
    try:
        return Result(name, True, await asyncio.wait_for(probe(settings), deadline))
    except DependencyError as exc:
        return Result(name, False, str(exc))
    except TimeoutError:
        return Result(name, False, f"no answer within {deadline:g} s; is it running?")
    except Exception as exc:  # a probe must report, never crash the command
        return Result(name, False, f"{type(exc).__name__}: {exc}")


async def run(settings: Settings) -> list[Result]:
    return list(
        await asyncio.gather(
            _probe("kafka", check_kafka, settings),
            _probe("postgres", check_postgres, settings),
            _probe("s3" if settings.dlq_bucket else "dlq", check_dead_letters, settings),
        )
    )
