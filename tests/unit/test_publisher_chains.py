"""How the publisher sends a partition's records: batches in a chain, each after the one before is
acknowledged; a failed batch ends its chain, the other partitions go on, and the call raises only
once every chain settled.

No broker: the producer here is aiokafka's own (its batch builders are real), with its two calls to
the network answered by the test, which decides which batch the broker fails. The same guarantee
through real connection cuts is tests/integration/test_publisher_order.py.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from services.kit.kafka import Publisher, Record
from services.kit.settings import Settings

PARTITIONS = [0, 1, 2, 3]


class Answering(AIOKafkaProducer):
    """aiokafka's producer with the broker's answers decided here (never started)."""

    def __init__(self, fail: set[tuple[int, int]]) -> None:
        super().__init__(bootstrap_servers="127.0.0.1:9", max_batch_size=2048)
        self.fail = fail                      # (partition, n-th batch of it) the broker fails
        self.sent: list[tuple[int, int, int]] = []   # (partition, n-th batch, records) as submitted
        self.in_flight: dict[int, int] = {}

    async def partitions_for(self, topic):
        return set(PARTITIONS)

    async def send_batch(self, batch, topic, *, partition):
        assert self.in_flight.get(partition, 0) == 0, "a partition's next batch waits for the one before"
        n = sum(1 for p, _, _ in self.sent if p == partition)
        self.sent.append((partition, n, batch.record_count()))
        self.in_flight[partition] = 1
        future = asyncio.get_running_loop().create_future()

        def answer() -> None:
            self.in_flight[partition] = 0
            if (partition, n) in self.fail:
                future.set_exception(KafkaTimeoutError("batch expired"))
            else:
                future.set_result(None)
        asyncio.get_running_loop().call_later(0.001 * (1 + partition), answer)
        return future


@pytest.fixture
async def answering():
    made: list[Answering] = []

    def make(fail: set[tuple[int, int]]) -> Answering:
        made.append(Answering(fail))
        return made[-1]
    yield make
    for producer in made:
        await producer.stop()


def publisher(producer: AIOKafkaProducer) -> Publisher:
    p = Publisher(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "KAFKA_PROFILE": "embedded"}))
    p._producer = producer
    return p


def records(n: int) -> list[Record]:
    return [Record("ledger.payments", f"beneficiary-{i % 8}".encode(), b"x" * 300 + str(i).encode())
            for i in range(n)]


def partition_of(p: Publisher, record: Record) -> int:
    return p._partitioner(record.key, PARTITIONS, PARTITIONS)


async def test_every_record_goes_in_a_chain_of_batches_per_partition_in_order(answering):
    producer = answering(set())
    p = publisher(producer)
    batch = records(200)
    await p.publish(batch)
    for partition in PARTITIONS:
        wanted = sum(1 for r in batch if partition_of(p, r) == partition)
        chain = [(n, count) for q, n, count in producer.sent if q == partition]
        assert [n for n, _ in chain] == list(range(len(chain)))
        assert sum(count for _, count in chain) == wanted
    assert max(n for _, n, _ in producer.sent) >= 2, "several batches per partition, or the chain is untested"


async def test_a_failed_batch_ends_its_chain_and_the_call_raises_after_every_chain_settled(answering):
    producer = answering({(1, 1)})
    p = publisher(producer)
    batch = records(200)
    with pytest.raises(KafkaTimeoutError):
        await p.publish(batch)
    chain_1 = [n for q, n, _ in producer.sent if q == 1]
    assert chain_1 == [0, 1], "nothing of partition 1 is sent after its failed batch"
    for partition in (0, 2, 3):   # the other partitions were all sent, and acknowledged before the raise
        wanted = sum(1 for r in batch if partition_of(p, r) == partition)
        assert sum(count for q, _, count in producer.sent if q == partition) == wanted
    assert not any(producer.in_flight.values()), "no batch of the failed call is still in flight"
