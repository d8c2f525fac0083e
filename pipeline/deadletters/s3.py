"""S3-compatible object storage built from the settings (AWS S3, R2, MinIO, moto).

Only this module knows how an aiobotocore client is configured.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from pipeline.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


def client(
    settings: Settings, read_timeout: float | None = None
) -> AbstractAsyncContextManager[S3Client]:
    """An S3 client as an async context manager: `async with s3.client(settings) as c:`."""
    config = AioConfig(
        connect_timeout=settings.connect_timeout,
        read_timeout=read_timeout or max(settings.connect_timeout, 30.0),
        retries={"max_attempts": 2, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.s3_endpoint else None,
    )
    return get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=settings.s3_secret_access_key or None,
        config=config,
    )
