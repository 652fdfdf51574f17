"""Run services as real processes (``refund-ledger run``) against the session's
broker and database, and talk to them over real connections."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from services.cli import processes
from services.kit.embedded import free_port
from tests.factories import TEST_BANK_KEYS_JSON

T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last value: {last!r}")


class ServiceProcess(processes.ServiceProcess):
    """A service under test: a random port, its own log and data directories."""

    def __init__(self, service: str, env: dict[str, str]) -> None:
        log_path = Path(tempfile.mkdtemp(prefix=f"{service}-")) / "service.log"
        env = {"BANK_SIGNING_KEYS": TEST_BANK_KEYS_JSON, **env}  # test-only keys, as tests.factories signs with
        super().__init__(service, {**os.environ, **env, "DATA_DIR": tempfile.mkdtemp()}, free_port(), log_path)

    def wait_ready(self, timeout: float = 120) -> ServiceProcess:
        try:
            wait_for(self.ready, timeout, f"{self.service} to be ready", interval=0.25)
        except (AssertionError, RuntimeError) as error:
            raise AssertionError(f"{error}\n--- {self.service} log ---\n{self.log_tail()}") from None
        return self

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        status, text = self.get("/metrics")
        assert status == 200, text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def start_all(processes: Iterable[ServiceProcess], timeout: float = 120) -> list[ServiceProcess]:
    started = [p.start() for p in processes]
    for process in started:
        process.wait_ready(timeout)
    return started


async def _produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        results = await asyncio.gather(*futures)
        return [(r.partition, r.offset) for r in results]
    finally:
        await producer.stop()


def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list[tuple[int, int]]:
    """Publish (topic, key, value) records with a plain Kafka client; return (partition, offset)s."""
    return asyncio.run(_produce(bootstrap, records))


async def _read_topic(bootstrap: str, topic: str, timeout: float) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        await consumer.seek_to_beginning(*assignment)
        end = await consumer.end_offsets(assignment)
        records = []
        deadline = time.monotonic() + timeout
        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in assignment])

        while time.monotonic() < deadline and await behind():
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


def read_topic(bootstrap: str, topic: str, timeout: float = 10) -> list[Any]:
    """Every record currently on ``topic``, read from the beginning with no consumer group."""
    return asyncio.run(_read_topic(bootstrap, topic, timeout))
