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
from services.kit.pii import CLEAR, FieldCipher
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
#: A projector that stores personal values: sealed and hashed with the read model's FieldCipher.
SealingProjector = Callable[[asyncpg.Connection, LedgerEvent, FieldCipher], Awaitable[None]]


async def _payment_recorded(conn: asyncpg.Connection, e: LedgerEvent, fields: FieldCipher) -> None:
    d = e.data
    await conn.execute(
        "INSERT INTO audit.payments (payment_id, beneficiary_id, payer_id, payer_iban, agency, "
        "service_code, amount, currency, channel, bank_code, third_party_payer, paid_at, recorded_at, "
        "sadad_bill_number, payer_iban_hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
        "ON CONFLICT (payment_id) DO NOTHING",
        d["payment_id"], d["beneficiary_id"], d["payer_id"], fields.seal(d["payer_iban"]), d["agency"],
        d["service_code"], d["amount"], d["currency"], d["channel"], bank_code(d["payer_iban"]),
        d["third_party_payer"], parse_time(d["paid_at"]), e.recorded_at, d.get("sadad_bill_number"),
        fields.lookup(d["payer_iban"]))
    # the refund of this payment (a visa fee) may have been projected first: topics carry no order between them
    await conn.execute(
        "UPDATE audit.payments p SET refund_state = r.state, refunded_at = r.completed_at, updated_at = now() "
        "FROM audit.refunds r WHERE p.payment_id = $1 AND r.payment_id = $1", d["payment_id"])


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


async def _rejected(conn: asyncpg.Connection, e: LedgerEvent, fields: FieldCipher) -> None:
    d, o = e.data, e.data["original"]
    await conn.execute(
        "INSERT INTO audit.rejections (event_id, rejected_by, reason_code, reason, topic, "
        "kafka_partition, kafka_offset, original_event_id, original_source, original_type, rejected_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (event_id) DO NOTHING",
        e.id, d["rejected_by"], d["reason_code"], fields.seal_ibans(d["reason"]), o["topic"], o["partition"],
        o["offset"], d.get("event_id"), d.get("event_source"), d.get("event_type"), e.time)


async def _payment_unreflected(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    await conn.execute(
        "UPDATE audit.payments SET unreflected_since = $2, updated_at = now() "
        "WHERE payment_id = $1 AND acknowledged_at IS NULL", e.data["payment_id"], parse_time(e.data["due_at"]))


async def _payment_unreflected_resolved(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    await conn.execute(
        "UPDATE audit.payments SET unreflected_since = NULL, unreflected_resolved_at = $2, updated_at = now() "
        "WHERE payment_id = $1", e.data["payment_id"], parse_time(e.data["acknowledged_at"]))


def visa_key(data: dict[str, Any]) -> str | None:
    """The visa a ledger event is about, as ``sponsor/export/serial``."""
    if all(k in data for k in ("sponsor_id", "export_number", "serial_number")):
        return f"{data['sponsor_id']}/{data['export_number']}/{data['serial_number']}"
    return None


async def _refund_requested(conn: asyncpg.Connection, e: LedgerEvent, fields: FieldCipher) -> None:
    d = e.data
    reference = d.get("reference") or {}
    await conn.execute(
        "INSERT INTO audit.refunds (refund_id, beneficiary_id, agency, service_code, amount, iban, bank_code, "
        "channel, route, state, route_owner, rules_version, third_party_payer, reference, payment_id, visa_key, "
        "requested_at, deadline, iban_hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,"
        "$19) ON CONFLICT (refund_id) DO NOTHING",
        d["refund_id"], d["beneficiary_id"], d["agency"], d["service_code"], d["amount"], fields.seal(d["iban"]),
        bank_code(d["iban"]), d["channel"], d.get("route", "BANK"), d.get("state", "AWAITING_HOLD"),
        d.get("route_owner", "BANK"), d.get("rules_version", ""), d.get("third_party_payer", False),
        json.dumps(fields.seal_ibans(reference)), reference.get("payment_id"), visa_key(reference),
        parse_time(d["requested_at"]), parse_time(d["deadline"]) if "deadline" in d else e.time,
        fields.lookup(d["iban"]))
    await conn.execute(_PAYMENT_REFUND_STATE, d["refund_id"])


def _refund_update(sql: str, *fields: str) -> Projector:
    """A projector that sets columns of the refund named by the event (and the refund state
    of the payment it refunds, for a visa fee)."""
    async def project(conn: asyncpg.Connection, e: LedgerEvent) -> None:
        values = [parse_time(e.data[f]) if f.endswith("_at") else e.data.get(f) for f in fields]
        await conn.execute(f"UPDATE audit.refunds SET {sql}, updated_at = now() WHERE refund_id = $1",  # noqa: S608 - sql is one of the constants below
                           e.data["refund_id"], *values)
        await conn.execute(_PAYMENT_REFUND_STATE, e.data["refund_id"])
    return project


_PAYMENT_REFUND_STATE = (
    "UPDATE audit.payments p SET refund_state = r.state, refunded_at = r.completed_at, updated_at = now() "
    "FROM audit.refunds r WHERE r.refund_id = $1 AND p.payment_id = r.payment_id")


def _visa_upsert(columns: dict[str, str]) -> Projector:
    """Insert the visa row if new and set ``columns`` (column -> data field) from the event."""
    names = list(columns)

    async def project(conn: asyncpg.Connection, e: LedgerEvent) -> None:
        d = e.data
        values = [parse_time(d[f]) if f.endswith("_at") and d.get(f) else d.get(f) for f in columns.values()]
        sets = ", ".join(f"{name} = COALESCE(${i + 5}, v.{name})" for i, name in enumerate(names))
        await conn.execute(
            f"INSERT INTO audit.visas AS v (visa_key, sponsor_id, export_number, serial_number, {', '.join(names)}) "  # noqa: S608 - constant columns
            f"VALUES ($1, $2, $3, $4, {', '.join(f'${i + 5}' for i in range(len(names)))}) "
            f"ON CONFLICT (visa_key) DO UPDATE SET {sets}, updated_at = now()",
            visa_key(d), d["sponsor_id"], d["export_number"], d["serial_number"], *values)
    return project


async def _visa_status(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    d = e.data
    await conn.execute(
        "INSERT INTO audit.visas AS v (visa_key, sponsor_id, export_number, serial_number, status, status_changed_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (visa_key) DO UPDATE SET status = EXCLUDED.status, "
        "status_changed_at = EXCLUDED.status_changed_at, updated_at = now() "
        "WHERE v.status_changed_at IS NULL OR v.status_changed_at <= EXCLUDED.status_changed_at",
        visa_key(d), d["sponsor_id"], d["export_number"], d["serial_number"], d["status"],
        parse_time(d["changed_at"]))


async def _status_mismatch(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    d = e.data
    # an upsert: ledger.refunds and ledger.visas carry no order between them, and the flag must not be
    # lost when it is projected before the visa (a rebuild, which replays visas first, would show it)
    await conn.execute(
        "INSERT INTO audit.visas AS v (visa_key, sponsor_id, export_number, serial_number, status, status_changed_at, "
        "status_mismatch_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (visa_key) DO UPDATE SET "
        "status_mismatch_at = EXCLUDED.status_mismatch_at, status = COALESCE(v.status, EXCLUDED.status), "
        "status_changed_at = COALESCE(v.status_changed_at, EXCLUDED.status_changed_at), updated_at = now()",
        visa_key(d), d["sponsor_id"], d["export_number"], d["serial_number"], d["status"],
        parse_time(d["status_changed_at"]), parse_time(d["flagged_at"]))


VISA_ISSUED = {"visa_type": "visa_type", "payment_id": "payment_id", "fee": "fee", "issued_at": "issued_at"}
VISA_REQUESTED = {"cancellation_requested_at": "requested_at", "cancellation_channel": "channel"}
VISA_ROUTED = {**VISA_ISSUED, **VISA_REQUESTED, "route": "route", "route_rule": "rule", "route_reason": "reason",
               "rules_version": "rules_version", "hours_since_issue": "hours_since_issue"}

_mark_overdue = _refund_update("overdue = true, overdue_at = $2, overdue_owner = $3", "marked_at", "owner")


async def _refund_overdue(conn: asyncpg.Connection, e: LedgerEvent) -> None:
    await _mark_overdue(conn, e)
    metrics.SLA_BREACHES.labels(e.data["route"], e.data["owner"]).inc()  # each overdue event is new here: once


PROJECTORS: dict[str, Projector] = {
    "ledger.visa.issued": _visa_upsert(VISA_ISSUED),
    "ledger.visa.cancellation_requested": _visa_upsert(VISA_REQUESTED),
    "ledger.visa.cancellation_accepted": _visa_upsert({"cancelled_at": "accepted_at"}),
    "ledger.visa.cancellation_routed": _visa_upsert(VISA_ROUTED),
    "ledger.visa.refund_started": _visa_upsert({"cancelled_at": "accepted_at", "route": "route"}),
    "ledger.visa.closed_non_refundable": _visa_upsert({"cancelled_at": "accepted_at", "route": "route",
                                                       "route_reason": "reason"}),
    "ledger.visa.status_changed": _visa_status,
    "ledger.refund.status_mismatch": _status_mismatch,
    "ledger.payment.acknowledged": _payment_acknowledged,
    "ledger.payment.unreflected": _payment_unreflected,
    "ledger.payment.unreflected_resolved": _payment_unreflected_resolved,
    "ledger.balance.credited": _balance_moved,
    "ledger.balance.charged": _balance_moved,
    "ledger.balance.held": _balance_moved,
    "ledger.balance.refunded": _balance_moved,
    "ledger.balance.released": _balance_moved,
    "ledger.refund.ordered": _refund_update(
        "state = 'ORDERED', ordered_at = $2, decided_by = COALESCE($3::text, decided_by), "
        "decided_at = CASE WHEN $3::text IS NULL THEN decided_at ELSE $2 END", "ordered_at", "decided_by"),
    "ledger.refund.approval_recorded": _refund_update(
        "first_approved_at = $2, first_approved_by = $3", "approved_at", "approved_by"),
    "ledger.refund.rejected": _refund_update(
        "state = 'REJECTED', decided_at = $2, decided_by = $3, rejection_rule = $4, rejection_reason = $5",
        "rejected_at", "decided_by", "rule", "reason"),
    "ledger.refund.completed": _refund_update(
        "state = 'COMPLETED', completed_at = $2, bank_reference = $3, completed_on_time = $4",
        "completed_at", "bank_reference", "on_time"),
    "ledger.refund.failed": _refund_update(
        "state = 'FAILED', failed_at = $2, bank_reference = $3, failure_reason = $4",
        "failed_at", "bank_reference", "reason"),
    "ledger.refund.overdue": _refund_overdue,
}

#: The event types whose rows hold an IBAN (or a raw rejected message): see services/kit/pii.py.
SEALING_PROJECTORS: dict[str, SealingProjector] = {
    "ledger.payment.recorded": _payment_recorded,
    "ledger.refund.requested": _refund_requested,
    "event.rejected": _rejected,
}

_INSERT_EVENT = (
    "INSERT INTO audit.ledger_events (event_id, topic, type, source, origin_source, origin_id, "
    "origin_type, subject, beneficiary_id, payment_id, refund_id, visa_key, occurred_at, recorded_at, data) "
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) ON CONFLICT (event_id) DO NOTHING "
    "RETURNING event_id")


class Projection:
    """Applies batches of ledger messages to the read model."""

    def __init__(self, pool: asyncpg.Pool, topic_prefix: str = "", fields: FieldCipher = CLEAR) -> None:
        self.pool = pool
        self.topic_prefix = topic_prefix
        self.fields = fields  # CIPHER_KEY set: IBANs (and raw rejected messages) stored sealed

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
                        self.fields.seal_ibans(f"{type(error).__name__}: {error}"[:1000]),
                        self.fields.seal_bytes(message.value))
        return applied

    def _stored_data(self, event: LedgerEvent) -> dict[str, Any]:
        """The event's data as ``ledger_events`` keeps it: with a key, every IBAN-holding string sealed,
        and a rejected message's raw key and value sealed whole (base64 or broken text hides nothing)."""
        data = self.fields.seal_ibans(event.data)
        original = data.get("original")
        if self.fields.keyed and event.type == "event.rejected" and isinstance(original, dict):
            data["original"] = {k: self.fields.seal(v) if k in {"key", "value"} and isinstance(v, str) else v
                                for k, v in original.items()}
        return data

    async def _apply_one(self, conn: asyncpg.Connection, message: RawMessage, topic: str) -> int:
        event = read(message, topic)
        origin = event.data.get("origin") or {}
        # jsonb cannot hold NUL characters; a rejected message may contain them.
        data = json.dumps(self._stored_data(event), ensure_ascii=False).replace("\\u0000", "\\ufffd")
        inserted = await conn.fetchval(
            _INSERT_EVENT, event.id, topic, event.type, event.source, origin.get("source"),
            origin.get("id"), origin.get("type"), event.subject, event.data.get("beneficiary_id"),
            event.data.get("payment_id"), event.data.get("refund_id"), visa_key(event.data),
            event.time, event.recorded_at, data)
        if inserted is None:
            return 0  # already projected
        projector = PROJECTORS.get(event.type)
        if projector is not None:
            await projector(conn, event)
        elif (sealing := SEALING_PROJECTORS.get(event.type)) is not None:
            await sealing(conn, event, self.fields)
        metrics.PROJECTION_APPLIED.labels(topic, event.type).inc()
        return 1


async def read_model_gauges(pool: asyncpg.Pool) -> None:
    """Refresh the gauges SREs alert on from the read model: refunds by state and route, overdue
    refunds per agency, unreflected payments, status mismatches."""
    async with pool.acquire() as conn:
        by_state = await conn.fetch("SELECT state, route, count(*) AS n FROM audit.refunds GROUP BY state, route")
        overdue = await conn.fetch(
            "SELECT agency, count(*) AS n FROM audit.refunds WHERE overdue AND state = ANY($1::text[]) "
            "GROUP BY agency", ["AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW", "ORDERED"])
        unreflected = await conn.fetchval("SELECT count(*) FROM audit.payments WHERE unreflected_since IS NOT NULL")
        mismatches = await conn.fetchval("SELECT count(*) FROM audit.visas WHERE status_mismatch_at IS NOT NULL")
    metrics.REFUNDS.clear()
    for row in by_state:
        metrics.REFUNDS.labels(row["state"], row["route"]).set(row["n"])
    metrics.REFUNDS_OVERDUE.clear()
    for row in overdue:
        metrics.REFUNDS_OVERDUE.labels(row["agency"]).set(row["n"])
    metrics.UNREFLECTED_PAYMENTS.set(unreflected)
    metrics.STATUS_MISMATCHES.set(mismatches)
