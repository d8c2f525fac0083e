"""Kafka clients built from the settings: security options, topic creation, a reachability probe.

Every aiokafka client tailpipe creates takes its connection options from `client_options`, so
SASL and TLS are configured in exactly one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

from pipeline.errors import DependencyError
from pipeline.settings import Settings

_TOPIC_ALREADY_EXISTS = 36


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every aiokafka producer, consumer and admin client."""
    protocol = settings.kafka_security_protocol
    timeout_ms = int(settings.connect_timeout * 1000)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": protocol,
        "request_timeout_ms": max(timeout_ms, 1000),
        "connections_max_idle_ms": 540_000,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile or None,
            certfile=settings.kafka_ssl_certfile or None,
            keyfile=settings.kafka_ssl_keyfile or None,
        )
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    brokers: int
    controller: int
    topics: frozenset[str]


class _Client(Protocol):
    async def start(self) -> None: ...


async def start(client: _Client, settings: Settings, close: Callable[[], Awaitable[Any]]) -> None:
    """Start an aiokafka client, or close it and raise a DependencyError that says which Kafka
    did not answer: a command must end with one line, not a traceback and an unclosed client."""
    try:
        await client.start()
    except Exception as exc:
        await close()
        raise DependencyError(
            f"Kafka at {settings.kafka_bootstrap} did not answer: {exc or type(exc).__name__}"
        ) from exc


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await start(admin, settings, admin.close)
    return admin


async def describe(settings: Settings) -> ClusterInfo:
    """Ask the cluster for its brokers and topics; raises DependencyError when unreachable."""
    admin = await _admin(settings)
    try:
        cluster = await admin.describe_cluster()
        topics = await admin.list_topics()
    finally:
        await admin.close()
    return ClusterInfo(
        brokers=len(cluster.get("brokers", [])),
        controller=int(cluster.get("controller_id", -1)),
        topics=frozenset(topics),
    )


async def ensure_topics(
    settings: Settings, partitions: Mapping[str, int], replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    admin = await _admin(settings)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=count, replication_factor=replication_factor)
            for name, count in partitions.items()
            if name not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
    finally:
        await admin.close()
    created = []
    for topic_error in response.topic_errors:
        name, code = topic_error[0], topic_error[1]
        if code == 0:
            created.append(name)
        elif code != _TOPIC_ALREADY_EXISTS:
            message = topic_error[2] if len(topic_error) > 2 else ""
            raise DependencyError(f"Kafka refused to create topic {name}: error {code} {message}")
    return created


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's high watermark: where a consumer that has read everything stands."""
    producer = AIOKafkaProducer(**client_options(settings))
    await start(producer, settings, producer.stop)
    try:
        partitions = sorted(await producer.partitions_for(topic))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await start(consumer, settings, consumer.stop)
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}
