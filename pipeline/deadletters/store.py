"""Where dead-letter objects are kept: an S3-compatible bucket, or a directory for development.

`TAILPIPE_DLQ_URL` picks it: `s3://bucket/prefix` (the endpoint, region and credentials are the
`TAILPIPE_S3_*` settings) or `file:///path`. Both offer the same four calls; object names come
from `pipeline.deadletters.record`. Any failure of the store raises `StoreUnavailable`: the
writer holds what it was writing and retries, it never drops a dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from pipeline.errors import DependencyError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class StoreUnavailable(DependencyError):
    """The dead-letter store did not take or give an object (down, slow, refused)."""


class Store(Protocol):
    prefix: str
    """Prepended to every object name (the path of an `s3://` URL)."""

    async def put(self, key: str, body: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def keys_after(self, prefix: str, after: str | None) -> list[str]:
        """Objects under `prefix` (one partition's) whose names sort after `after` (all when
        None), in name order."""
        ...

    async def delete(self, keys: list[str]) -> None: ...


class S3Store:
    """The client is made on first use, and closed by `open_store`: a replica that never
    dead-letters neither imports aiobotocore (0.25 s of CPU, over half of a replica's start)
    nor builds a client. A client that cannot be made is `StoreUnavailable` like any other
    failure, so the writer retries."""

    def __init__(self, settings: Settings, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._settings = settings
        self._opened = contextlib.AsyncExitStack()
        self._made: S3Client | None = None
        self._making = asyncio.Lock()

    async def _client(self) -> S3Client:
        if self._made is None:
            async with self._making:
                if self._made is None:
                    from pipeline.deadletters import s3  # on first use: see the class

                    timeout = max(self._settings.connect_timeout, 10.0)
                    opening = s3.client(self._settings, read_timeout=timeout)
                    self._made = await self._opened.enter_async_context(opening)
        return self._made

    async def close(self) -> None:
        self._made = None
        await self._opened.aclose()

    async def put(self, key: str, body: bytes) -> None:
        async with _unavailable("put", key):
            await (await self._client()).put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson",
                ContentEncoding="gzip",
            )  # fmt: skip

    async def get(self, key: str) -> bytes:
        async with _unavailable("get", key):
            response = await (await self._client()).get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                return await stream.read()

    async def keys_after(self, prefix: str, after: str | None) -> list[str]:
        keys: list[str] = []
        async with _unavailable("list", prefix):
            paginator = (await self._client()).get_paginator("list_objects_v2")
            async for page in paginator.paginate(
                Bucket=self.bucket, Prefix=prefix, StartAfter=after or ""
            ):
                keys.extend(o["Key"] for o in page.get("Contents", ()))
        return keys

    async def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        async with _unavailable("delete", keys[0]):
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                await (await self._client()).delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]}
                )


class FileStore:
    """Objects as files under a root directory: written to a temporary name, synced, renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = ""

    def _put(self, key: str, body: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(path)

    async def put(self, key: str, body: bytes) -> None:
        async with _unavailable("put", key):
            await asyncio.to_thread(self._put, key, body)

    async def get(self, key: str) -> bytes:
        async with _unavailable("get", key):
            return await asyncio.to_thread((self.root / key).read_bytes)

    async def keys_after(self, prefix: str, after: str | None) -> list[str]:
        directory = self.root / prefix
        if not directory.is_dir():
            return []
        names = sorted(p.name for p in directory.iterdir() if p.name.endswith(".jsonl.gz"))
        return [k for k in (f"{prefix}{n}" for n in names) if after is None or k > after]

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def _unavailable(action: str, key: str) -> AsyncIterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as exc:  # botocore's and the OS's: none of them may drop a dead letter
        raise StoreUnavailable(f"dead-letter store: {action} {key}: {exc}") from exc


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The store `TAILPIPE_DLQ_URL` names, open for the duration of the block."""
    url = urlsplit(settings.dlq_url)
    if url.scheme == "file":
        yield FileStore(Path(unquote(url.path)))
        return
    store = S3Store(settings, url.netloc, url.path.strip("/"))
    try:
        yield store
    finally:
        await store.close()
