"""Kafka plumbing shared by every service: topic declaration and a publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

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

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=self._settings.kafka_idempotent_producer,
            linger_ms=5,
            request_timeout_ms=15000,
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
        """Send every record; return only when the broker acknowledged all."""
        assert self._producer is not None, "publisher not started"
        futures = [
            await self._producer.send(self._settings.topic(r.topic), r.value, key=r.key)
            for r in records
        ]
        await asyncio.gather(*futures)
