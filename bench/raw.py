"""The raw limit: what this design could do at best on the same broker and database.

A plain aiokafka consumer reads the partner topics, parses each record's JSON
and writes one new ``eventsourcing`` aggregate per record, one transaction per
batch with the Kafka positions (the same recorder and tracking table the
services use). No Faust, no CloudEvents validation, no domain, no outbox.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from services.kit.store import IngressRecorder, ensure_schema, kafka_tracking

BATCH = 500
STALL = 60.0  # seconds without a record once started: give up


class RawRecord(Aggregate):
    """One consumed Kafka record, stored as it came."""

    @staticmethod
    def create_id(topic: str, partition: int, offset: int):
        return uuid5(NAMESPACE_URL, f"{topic}/{partition}/{offset}")

    @event("Consumed")
    def __init__(self, topic: str, partition: int, offset: int, body: dict[str, Any]) -> None:
        self.topic = topic
        self.body = body


class RawStore(Application):
    name = "bench_raw"

    def __init__(self, settings, schema: str = "bench_raw") -> None:
        ensure_schema(settings.database_url, schema)
        env = settings.postgres_env(schema)
        env["PROCESS_RECORDER_TOPIC"] = f"{IngressRecorder.__module__}:{IngressRecorder.__qualname__}"
        super().__init__(env)

    def construct_recorder(self):
        return self.factory.process_recorder()

    def store(self, messages: list) -> None:
        aggregates, last = [], {}
        for m in messages:
            aggregates.append(RawRecord(m.topic, m.partition, m.offset, json.loads(m.value)))
            last[(m.topic, m.partition)] = max(m.offset, last.get((m.topic, m.partition), -1))
        self.save(*aggregates, trackings=[kafka_tracking(t, p, o) for (t, p), o in last.items()])


async def consume_and_store(settings, topics: list[str], expected: int | Callable[[], int | None], *,
                            timeout: float = 1800, latencies: list[float] | None = None) -> dict[str, Any]:
    """Consume ``expected`` records of ``topics`` from the beginning and store them in batches
    (``expected`` may be a callable: None while the count is not known yet).

    With ``latencies``, appends each record's time from its Kafka timestamp (set by the
    producer) to its transaction's commit, in seconds.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from services.kit.kafka import client_options

    app = await asyncio.to_thread(RawStore, settings)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=BATCH,
                                fetch_max_bytes=16 * 2**20, max_partition_fetch_bytes=4 * 2**20)
    await consumer.start()
    try:
        partitions = []
        for topic in topics:
            found = consumer.partitions_for_topic(topic)
            patience = time.monotonic() + 30
            while not found and time.monotonic() < patience:  # metadata of a new topic may lag
                await consumer._client.force_metadata_update()
                found = consumer.partitions_for_topic(topic)
                if not found:
                    await asyncio.sleep(0.2)
            if not found:
                raise RuntimeError(f"no partitions for {topic}")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        stored, batches, first, deadline = 0, 0, None, time.monotonic() + timeout
        last_seen = time.monotonic()
        def more() -> bool:
            wanted = expected() if callable(expected) else expected
            return wanted is None or stored < wanted

        while more() and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            messages = [m for batch in fetched.values() for m in batch]
            if not messages:
                if first and time.monotonic() - last_seen > STALL:
                    raise RuntimeError(f"raw consumer stalled at {stored} records")
                continue
            last_seen = time.monotonic()
            first = first or time.monotonic()
            await asyncio.to_thread(app.store, messages)
            if latencies is not None:
                now_ms = time.time() * 1000
                latencies.extend((now_ms - m.timestamp) / 1000 for m in messages)
            stored += len(messages)
            batches += 1
        seconds = time.monotonic() - (first or time.monotonic())
    finally:
        await consumer.stop()
        app.close()
    return {"events": stored, "seconds": round(seconds, 2), "batches": batches,
            "events_per_s": round(stored / seconds, 1) if seconds else None}
