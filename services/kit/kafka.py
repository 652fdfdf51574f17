"""Kafka plumbing shared by every service: topic declaration and a publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from services.kit.settings import Settings
from services.kit.topics import ALL_TOPICS

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Record:
    """One message to publish; ``topic`` is the logical name (prefix added on send)."""

    topic: str
    key: bytes | None
    value: bytes


async def ensure_topics(settings: Settings, names: Iterable[str] = ALL_TOPICS) -> None:
    """Create the project's topics with their partition count if they are missing."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(settings.topic(n), settings.topic_partitions, settings.topic_replication)
                  for n in names if settings.topic(n) not in existing]
        for topic in wanted:  # one by one: a concurrent creator must not fail the rest
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
    finally:
        await admin.close()


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection security for every aiokafka client (TLS, SASL/SCRAM) from the settings."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers, "security_protocol": protocol}
    if protocol in {"SSL", "SASL_SSL"}:
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile or None)
    if protocol.startswith("SASL"):
        settings.require("kafka_sasl_username", "kafka_sasl_password")
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    return options


class Publisher:
    """An aiokafka producer that publishes a batch and waits for every ack."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()   # the producer's own: keys keep their partitions

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=self._settings.kafka_idempotent_producer,
            linger_ms=5,
            request_timeout_ms=int(self._settings.kafka_request_timeout * 1000),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def publish(self, records: Sequence[Record]) -> None:
        """Send every record; return only when the broker acknowledged all.

        The records of one partition reach the broker in the order given, even without an
        idempotent producer (Tansu refuses one): they go as a chain of batches, each sent only
        once the one before it was acknowledged, so a batch that fails (a connection cut longer
        than the request timeout expires it) is never overtaken by a later batch of its partition.
        The call returns or raises only once every chain has settled, so the caller's retry never
        races a batch of the failed attempt. (With a plain ``send()`` per record, aiokafka sends
        the next queued batch of a partition as soon as an earlier one expires: an acknowledgement
        reached the broker before the payment it acknowledged, and the read model lost it.)
        """
        producer = self._producer
        assert producer is not None, "publisher not started"
        chains: dict[tuple[str, int], list[Record]] = {}
        partitions: dict[str, list[int]] = {}
        for record in records:
            topic = self._settings.topic(record.topic)
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = self._partitioner(record.key, partitions[topic], partitions[topic])
            chains.setdefault((topic, partition), []).append(record)
        await settle([self._send_chain(producer, topic, partition, chain)
                      for (topic, partition), chain in chains.items()])

    @staticmethod
    async def _send_chain(producer: AIOKafkaProducer, topic: str, partition: int,
                          records: Sequence[Record]) -> None:
        """One partition's records as batches, one acknowledged before the next is sent."""
        batch = producer.create_batch()
        for record in records:
            if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                await _send_batch(producer, batch, topic, partition)
                batch = producer.create_batch()
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(record.value)} bytes does not fit in an empty batch")
        if batch.record_count():
            await _send_batch(producer, batch, topic, partition)


async def _send_batch(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> None:
    batch.close()   # sent as it is, without lingering
    await (await producer.send_batch(batch, topic, partition=partition))


async def settle(coroutines: Sequence[Awaitable[None]]) -> None:
    """Run every coroutine to its end, then raise the first failure (if any)."""
    for outcome in await asyncio.gather(*coroutines, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
