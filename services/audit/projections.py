"""Projections of the ledger topics into the audit read model (asyncpg).

Each batch is applied in one transaction. An event is applied only if its id
was not projected before (``ledger_events`` is also the idempotency table),
and balances keep the highest aggregate version, so redelivered or relayed-
twice events change nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.kit import metrics
from services.kit.envelope import RawMessage, parse_time
from services.kit.iban import bank_code
from services.kit.topics import LEDGER_TOPICS

log = logging.getLogger(__name__)

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
FOLLOWED_TOPICS = (*LEDGER_TOPICS, "rejections")


@dataclass(frozen=True)
class LedgerEvent:
    id: str
    topic: str
    type: str
    source: str
    time: datetime
    recorded_at: datetime
    subject: str | None
    data: dict[str, Any]


class UnreadableEvent(ValueError):
    """Raised when a ledger message is not a CloudEvent this projection can read."""


def read(message: RawMessage, logical_topic: str) -> LedgerEvent:
    try:
        attributes = json.loads(message.value or b"")
        return LedgerEvent(
            id=attributes["id"], topic=logical_topic, type=attributes["type"],
            source=attributes["source"], time=parse_time(attributes["time"]),
            recorded_at=parse_time(attributes.get("recordedat") or attributes["time"]),
            subject=attributes.get("subject"), data=attributes["data"],
        )
    except (ValueError, KeyError, TypeError) as error:
        raise UnreadableEvent(f"{type(error).__name__}: {error}") from None


async def create_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))


Projector = Callable[[asyncpg.Connection, LedgerEvent], Awaitable[None]]


async def _payment_recorded(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    d = e.data
    await conn.execute(
        "INSERT INTO audit.payments (payment_id, beneficiary_id, payer_id, payer_iban, agency, "
        "service_code, amount, currency, channel, bank_code, third_party_payer, paid_at, recorded_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT (payment_id) DO NOTHING",
        d["payment_id"], d["beneficiary_id"], d["payer_id"], d["payer_iban"], d["agency"],
        d["service_code"], d["amount"], d["currency"], d["channel"], bank_code(d["payer_iban"]),
        d["third_party_payer"], parse_time(d["paid_at"]), e.recorded_at)


async def _payment_acknowledged(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    await conn.execute(
        "UPDATE audit.payments SET acknowledged_at = $2, updated_at = now() "
        "WHERE payment_id = $1 AND acknowledged_at IS NULL",
        e.data["payment_id"], parse_time(e.data["acknowledged_at"]))


async def _balance_moved(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    d, b = e.data, e.data["balance"]
    await conn.execute(
        "INSERT INTO audit.balances AS b (beneficiary_id, agency, service_code, credited, charged, "
        "held, refunded, available, version, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
        "ON CONFLICT (beneficiary_id, agency, service_code) DO UPDATE SET "
        "credited = EXCLUDED.credited, charged = EXCLUDED.charged, held = EXCLUDED.held, "
        "refunded = EXCLUDED.refunded, available = EXCLUDED.available, version = EXCLUDED.version, "
        "updated_at = EXCLUDED.updated_at WHERE b.version < EXCLUDED.version",
        d["beneficiary_id"], d["agency"], d["service_code"], b["credited"], b["charged"], b["held"],
        b["refunded"], b["available"], d["balance_version"], e.recorded_at)


async def _rejected(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    d, o = e.data, e.data["original"]
    await conn.execute(
        "INSERT INTO audit.rejections (event_id, rejected_by, reason_code, reason, topic, "
        "kafka_partition, kafka_offset, original_event_id, original_source, original_type, rejected_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (event_id) DO NOTHING",
        e.id, d["rejected_by"], d["reason_code"], d["reason"], o["topic"], o["partition"], o["offset"],
        d.get("event_id"), d.get("event_source"), d.get("event_type"), e.time)


PROJECTORS: dict[str, Projector] = {
    "ledger.payment.recorded": _payment_recorded,
    "ledger.payment.acknowledged": _payment_acknowledged,
    "ledger.balance.credited": _balance_moved,
    "ledger.balance.charged": _balance_moved,
    "event.rejected": _rejected,
}

_INSERT_EVENT = (
    "INSERT INTO audit.ledger_events (event_id, topic, type, source, origin_source, origin_id, "
    "origin_type, subject, beneficiary_id, payment_id, occurred_at, recorded_at, data) "
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT (event_id) DO NOTHING "
    "RETURNING event_id")


class Projection:
    """Applies batches of ledger messages to the read model."""

    def __init__(self, pool: asyncpg.Pool, topic_prefix: str = "") -> None:
        self.pool = pool
        self.topic_prefix = topic_prefix

    def logical(self, topic: str) -> str:
        return topic.removeprefix(self.topic_prefix)

    async def apply(self, messages: Sequence[RawMessage]) -> int:
        """Apply a batch in one transaction; return how many events were new.

        Each message gets a savepoint: one that cannot be projected is kept in
        ``projection_errors`` and the rest of the batch still applies.
        """
        applied = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for message in messages:
                topic = self.logical(message.topic)
                try:
                    async with conn.transaction():
                        applied += await self._apply_one(conn, message, topic)
                except (UnreadableEvent, KeyError, TypeError, ValueError, asyncpg.DataError) as error:
                    log.error("ledger message not projected: %s", error,
                              extra={"topic": topic, "offset": message.offset})
                    await conn.execute(
                        "INSERT INTO audit.projection_errors (topic, kafka_partition, kafka_offset, error, raw) "
                        "VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING",
                        topic, message.partition, message.offset,
                        f"{type(error).__name__}: {error}"[:1000], message.value)
        return applied

    async def _apply_one(self, conn: asyncpg.Connection, message: RawMessage, topic: str) -> int:
        event = read(message, topic)
        origin = event.data.get("origin") or {}
        # jsonb cannot hold NUL characters; a rejected message may contain them.
        data = json.dumps(event.data, ensure_ascii=False).replace("\\u0000", "\\ufffd")
        inserted = await conn.fetchval(
            _INSERT_EVENT, event.id, topic, event.type, event.source, origin.get("source"),
            origin.get("id"), origin.get("type"), event.subject, event.data.get("beneficiary_id"),
            event.data.get("payment_id"), event.time, event.recorded_at, data)
        if inserted is None:
            return 0  # already projected
        projector = PROJECTORS.get(event.type)
        if projector is not None:
            await projector(conn, event)
        metrics.PROJECTION_APPLIED.labels(topic, event.type).inc()
        return 1
