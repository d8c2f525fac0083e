"""S3 put, list and get through aiobotocore against the real local endpoint."""

from __future__ import annotations

from pipeline.deadletters import s3
from pipeline.settings import Settings
from tests.conftest import unique


async def test_put_list_get(settings: Settings) -> None:
    prefix = unique("it")
    bodies = {f"{prefix}/object-{i}.bin": bytes([i]) * (i + 1) * 100 for i in range(3)}
    async with s3.client(settings) as client:
        for key, body in bodies.items():
            await client.put_object(Bucket=settings.dlq_bucket, Key=key, Body=body)
        listing = await client.list_objects_v2(Bucket=settings.dlq_bucket, Prefix=prefix + "/")
        assert sorted(o["Key"] for o in listing["Contents"]) == sorted(bodies)
        assert {o["Key"]: o["Size"] for o in listing["Contents"]} == {
            k: len(v) for k, v in bodies.items()
        }
        for key, body in bodies.items():
            got = await client.get_object(Bucket=settings.dlq_bucket, Key=key)
            async with got["Body"] as stream:
                assert await stream.read() == body
