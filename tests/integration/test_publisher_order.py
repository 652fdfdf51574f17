"""The publisher keeps each partition's order through connection cuts, without an idempotent producer.

Tansu refuses idempotent producers, so nothing in the broker protects the order of a
partition when a produce fails: with a plain ``send()`` per record, aiokafka sends the next
queued batch of a partition as soon as an earlier one expires, and the relay's retry puts the
expired records behind it. Downstream that is an acknowledgement projected before the payment
it acknowledges (the outage test saw the read model lose it).

Here a relay-like loop publishes consecutive numbered batches on a real broker while the line in
front of it is cut several times for longer than the request timeout; every publish that fails is
retried, as the outbox relay does. Then the topic is read back: for every key, the first time each
record appears must follow the order it was published in, and nothing may be missing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from services.kit.embedded import EmbeddedKafka, free_port
from services.kit.kafka import Publisher, Record, ensure_topics
from services.kit.settings import Settings
from tests.e2e.harness import read_topic
from tests.netcut import Cut

pytestmark = pytest.mark.integration

KEYS = [f"beneficiary-{n}".encode() for n in range(6)]
PER_BATCH = 300         # records per relay batch: several aiokafka batches per partition
CUTS = tuple(1.1 + 0.15 * (n % 7) for n in range(8))   # seconds each cut lasts, all longer than the timeout
TIMEOUT = 1.0           # KAFKA_REQUEST_TIMEOUT for this test


def relay_batch(b: int) -> list[Record]:
    return [Record("ledger.payments", KEYS[n % len(KEYS)],
                   json.dumps({"seq": b * PER_BATCH + n, "key": KEYS[n % len(KEYS)].decode(),
                               "pad": "x" * 600}).encode())
            for n in range(PER_BATCH)]


async def relay(settings: Settings, cutting: threading.Thread, batches: list[list[Record]]) -> int:
    """Publish numbered batches, each until it succeeds (the outbox relay's loop), while the line
    is being cut and a few after; return the failed attempts."""
    publisher = Publisher(settings)
    await publisher.start()
    failures = after = 0
    try:
        while after < 3:
            after += not cutting.is_alive()
            batch = relay_batch(len(batches))
            batches.append(batch)
            await asyncio.sleep(0.05)   # the relay's pace between batches
            while True:
                try:
                    await publisher.publish(batch)
                    break
                except Exception:
                    failures += 1
                    await asyncio.sleep(0.2)
    finally:
        await publisher.stop()
    return failures


def cutter(line: Cut, stop: threading.Event) -> None:
    for seconds in CUTS:
        if stop.wait(0.8):
            return
        line.cut()
        time.sleep(seconds)
        line.connect()


@pytest.mark.timeout(180)
def test_each_partition_keeps_its_order_through_cuts_longer_than_the_request_timeout():
    broker_port, proxy_port = free_port(), free_port()
    broker = EmbeddedKafka(port=broker_port, advertised_port=proxy_port).start()
    line = Cut(proxy_port, broker_port).connect()
    stop = threading.Event()
    try:
        settings = Settings.from_env({
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "KAFKA_PROFILE": "embedded",
            "TOPIC_PREFIX": f"p{uuid.uuid4().hex[:8]}.", "KAFKA_REQUEST_TIMEOUT": str(TIMEOUT)})
        asyncio.run(ensure_topics(settings, ["ledger.payments"]))
        batches: list[list[Record]] = []
        cuts = threading.Thread(target=cutter, args=(line, stop), daemon=True)
        cuts.start()
        failures = asyncio.run(relay(settings, cuts, batches))
        cuts.join()
        records = read_topic(broker.bootstrap_servers, settings.topic("ledger.payments"), timeout=30)
    finally:
        stop.set()
        line.cut()
        broker.stop()

    first_seen: dict[str, list[int]] = {}
    seen: set[int] = set()
    for record in records:   # partition by partition, each in offset order
        value = json.loads(record.value)
        if value["seq"] not in seen:
            seen.add(value["seq"])
            first_seen.setdefault(value["key"], []).append(value["seq"])
    sent = {key.decode(): [json.loads(r.value)["seq"] for b in batches for r in b if r.key == key] for key in KEYS}
    assert failures > 0, "the cuts must have failed some publishes, or this proves nothing"
    for key, order in sent.items():
        got = first_seen.get(key, [])
        first_wrong = next((i for i, (a, b) in enumerate(zip(got, order, strict=False)) if a != b), None)
        assert got == order, f"{key}: {len(got)} of {len(order)} records, first out of order at {first_wrong}"
    print(f"\n[publisher order] {len(seen)} records in {len(batches)} batches, {len(CUTS)} cuts, "
          f"{failures} failed publishes retried, {len(records) - len(seen)} duplicates, order kept")
