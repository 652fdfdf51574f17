"""The audit projection applies a batch set-based, on a real PostgreSQL read model.

A batch is stored with one ``ledger_events`` statement and its events' statements run in event
order (runs of one statement as one ``executemany``). What must hold whatever the batching: the
events of one case apply in their order inside one batch, an event seen before (or twice in the
batch) changes nothing, a message that cannot be read or that the read model refuses is kept in
``projection_errors`` while the rest of its batch applies, and metrics count each new event once.
"""

from __future__ import annotations

import json

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.audit.projections import Projection
from services.kit.envelope import RawMessage
from tests.integration.test_audit_api import Ledger, read_model, riyadh

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url):
    async with read_model(database_url) as pool:
        yield pool


def applied_total(event_type: str) -> float:
    return sum(REGISTRY.get_sample_value("refund_ledger_projection_applied_total", {"topic": t, "type": event_type})
               or 0.0 for t in ("ledger.payments", "ledger.refunds"))


def breaches_total() -> float:
    return REGISTRY.get_sample_value("refund_ledger_sla_breaches_total", {"route": "BANK", "owner": "BANK"}) or 0.0


def one_case(ledger: Ledger, payment_id: str, refund_id: str) -> None:
    """A payment and its refund's whole journey, every event in one batch."""
    ledger.payment(payment_id, riyadh(1, 9))
    ledger.acknowledged(payment_id, riyadh(1, 9, 5))
    ledger.refund_requested(refund_id, riyadh(2, 10))
    ledger.ordered(refund_id, riyadh(2, 11))
    ledger.overdue(refund_id, riyadh(20, 8))
    ledger.completed(refund_id, riyadh(20, 9))


def message(topic: str, value: bytes, offset: int) -> RawMessage:
    return RawMessage(topic, 0, 1000 + offset, b"k", value)


async def test_a_batch_applies_each_case_in_event_order_and_once(pool: asyncpg.Pool):
    ledger = Ledger(pool)
    for n in range(1, 4):
        one_case(ledger, f"PAY-{n}", f"REF-{n}")
    batch = ledger.messages
    applied_before, breaches_before = applied_total("ledger.refund.completed"), breaches_total()

    projection = Projection(pool)
    assert await projection.apply([*batch, batch[0], batch[5]]) == len(batch), "a copy in the batch applies once"
    statements, round_trips = projection.statements, projection.round_trips
    assert statements >= len(batch) and 1 < round_trips <= statements + 1  # ledger_events, then the runs
    assert await projection.apply(batch) == 0, "a redelivered batch changes nothing"
    assert (projection.statements, projection.round_trips) == (statements, round_trips + 1), \
        "a redelivered batch runs only its ledger_events insert"

    async with pool.acquire() as conn:
        refunds = await conn.fetch("SELECT refund_id, state, overdue, completed_at FROM audit.refunds ORDER BY 1")
        payments = await conn.fetch("SELECT payment_id, acknowledged_at FROM audit.payments ORDER BY 1")
        events = await conn.fetchval("SELECT count(*) FROM audit.ledger_events")
    assert [(r["refund_id"], r["state"], r["overdue"], r["completed_at"]) for r in refunds] == [
        (f"REF-{n}", "COMPLETED", True, riyadh(20, 9)) for n in range(1, 4)]
    assert [(p["payment_id"], p["acknowledged_at"]) for p in payments] == [
        (f"PAY-{n}", riyadh(1, 9, 5)) for n in range(1, 4)]
    assert events == len(batch)
    assert applied_total("ledger.refund.completed") - applied_before == 3
    assert breaches_total() - breaches_before == 3, "each overdue refund is one breach, however often it arrives"


async def test_bad_messages_are_kept_apart_and_the_rest_of_their_batch_applies(pool: asyncpg.Pool):
    ledger = Ledger(pool)
    one_case(ledger, "PAY-GOOD", "REF-GOOD")
    good = ledger.messages
    payment = json.loads(good[0].value)
    unreadable = message("ledger.payments", b"{not json", 1)
    incomplete = message("ledger.payments", json.dumps(
        {**payment, "id": "incomplete:1", "data": {k: v for k, v in payment["data"].items() if k != "agency"}}
    ).encode(), 2)
    # schema-valid JSON the read model refuses: amount 0 breaks audit.payments' CHECK (amount > 0)
    refused = message("ledger.payments", json.dumps(
        {**payment, "id": "refused:1", "data": {**payment["data"], "payment_id": "PAY-ZERO", "amount": 0}}).encode(), 3)
    # a value the column type refuses: an amount beyond bigint
    too_big = message("ledger.payments", json.dumps(
        {**payment, "id": "too-big:1", "data": {**payment["data"], "payment_id": "PAY-BIG", "amount": 2**70}}
    ).encode(), 4)

    batch = [good[0], unreadable, good[1], incomplete, refused, *good[2:4], too_big, *good[4:]]
    assert await Projection(pool).apply(batch) == len(good)

    async with pool.acquire() as conn:
        errors = await conn.fetch("SELECT kafka_offset, error FROM audit.projection_errors ORDER BY kafka_offset")
        kept = await conn.fetch("SELECT event_id FROM audit.ledger_events")
        refunds = await conn.fetch("SELECT refund_id, state FROM audit.refunds")
        payments = await conn.fetch("SELECT payment_id FROM audit.payments")
    assert [e["kafka_offset"] for e in errors] == [1001, 1002, 1003, 1004]
    assert errors[0]["error"].startswith("UnreadableEvent")
    assert errors[1]["error"] == "KeyError: 'agency'"
    assert errors[2]["error"].startswith("CheckViolationError")
    assert errors[3]["error"].startswith("DataError")
    assert {r["event_id"] for r in kept} == {json.loads(m.value)["id"] for m in good}, \
        "a refused event leaves no timeline row behind"
    assert [(r["refund_id"], r["state"]) for r in refunds] == [("REF-GOOD", "COMPLETED")]
    assert [p["payment_id"] for p in payments] == ["PAY-GOOD"]

    assert await Projection(pool).apply(batch) == 0, "applied again: nothing new, the errors kept once"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit.projection_errors") == 4
