"""Projections of the ledger topics into the audit read model (asyncpg).

Each batch is applied in one transaction. An event is applied only if its id
was not projected before (``ledger_events`` is also the idempotency table),
and balances keep the highest aggregate version, so redelivered or relayed-
twice events change nothing.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class Statement:
    """One SQL statement a projector wants run; a batch runs them in event order."""

    sql: str
    args: tuple[Any, ...]


#: A projector turns one ledger event into the statements that apply it to the read model. It does
#: no I/O: a batch builds every event's statements first (an event it cannot read fails here, alone)
#: and then runs them in one transaction. ``fields`` seals and hashes personal values (IBANs).
Projector = Callable[[LedgerEvent, FieldCipher], list[Statement]]


def _payment_recorded(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    d = e.data
    return [
        Statement(
            "INSERT INTO audit.payments (payment_id, beneficiary_id, payer_id, payer_iban, agency, "
            "service_code, amount, currency, channel, bank_code, third_party_payer, paid_at, recorded_at, "
            "sadad_bill_number, payer_iban_hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
            "ON CONFLICT (payment_id) DO NOTHING",
            (d["payment_id"], d["beneficiary_id"], d["payer_id"], fields.seal(d["payer_iban"]), d["agency"],
             d["service_code"], d["amount"], d["currency"], d["channel"], bank_code(d["payer_iban"]),
             d["third_party_payer"], parse_time(d["paid_at"]), e.recorded_at, d.get("sadad_bill_number"),
             fields.lookup(d["payer_iban"]))),
        # the refund of this payment (a visa fee) may have been projected first: topics carry no order between them
        Statement(
            "UPDATE audit.payments p SET refund_state = r.state, refunded_at = r.completed_at, updated_at = now() "
            "FROM audit.refunds r WHERE p.payment_id = $1 AND r.payment_id = $1", (d["payment_id"],)),
    ]


def _payment_acknowledged(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    return [Statement(
        "UPDATE audit.payments SET acknowledged_at = $2, updated_at = now() "
        "WHERE payment_id = $1 AND acknowledged_at IS NULL",
        (e.data["payment_id"], parse_time(e.data["acknowledged_at"])))]


def _balance_moved(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    d, b = e.data, e.data["balance"]
    return [Statement(
        "INSERT INTO audit.balances AS b (beneficiary_id, agency, service_code, credited, charged, "
        "held, refunded, available, version, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
        "ON CONFLICT (beneficiary_id, agency, service_code) DO UPDATE SET "
        "credited = EXCLUDED.credited, charged = EXCLUDED.charged, held = EXCLUDED.held, "
        "refunded = EXCLUDED.refunded, available = EXCLUDED.available, version = EXCLUDED.version, "
        "updated_at = EXCLUDED.updated_at WHERE b.version < EXCLUDED.version",
        (d["beneficiary_id"], d["agency"], d["service_code"], b["credited"], b["charged"], b["held"],
         b["refunded"], b["available"], d["balance_version"], e.recorded_at))]


def _rejected(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    d, o = e.data, e.data["original"]
    return [Statement(
        "INSERT INTO audit.rejections (event_id, rejected_by, reason_code, reason, topic, "
        "kafka_partition, kafka_offset, original_event_id, original_source, original_type, rejected_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (event_id) DO NOTHING",
        (e.id, d["rejected_by"], d["reason_code"], fields.seal_ibans(d["reason"]), o["topic"], o["partition"],
         o["offset"], d.get("event_id"), d.get("event_source"), d.get("event_type"), e.time))]


def _payment_unreflected(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    return [Statement(
        "UPDATE audit.payments SET unreflected_since = $2, updated_at = now() "
        "WHERE payment_id = $1 AND acknowledged_at IS NULL", (e.data["payment_id"], parse_time(e.data["due_at"])))]


def _payment_unreflected_resolved(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    return [Statement(
        "UPDATE audit.payments SET unreflected_since = NULL, unreflected_resolved_at = $2, updated_at = now() "
        "WHERE payment_id = $1", (e.data["payment_id"], parse_time(e.data["acknowledged_at"])))]


def visa_key(data: dict[str, Any]) -> str | None:
    """The visa a ledger event is about, as ``sponsor/export/serial``."""
    if all(k in data for k in ("sponsor_id", "export_number", "serial_number")):
        return f"{data['sponsor_id']}/{data['export_number']}/{data['serial_number']}"
    return None


_PAYMENT_REFUND_STATE = (
    "UPDATE audit.payments p SET refund_state = r.state, refunded_at = r.completed_at, updated_at = now() "
    "FROM audit.refunds r WHERE r.refund_id = $1 AND p.payment_id = r.payment_id")


def _refund_requested(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    d = e.data
    reference = d.get("reference") or {}
    return [
        Statement(
            "INSERT INTO audit.refunds (refund_id, beneficiary_id, agency, service_code, amount, iban, bank_code, "
            "channel, route, state, route_owner, rules_version, third_party_payer, reference, payment_id, "
            "visa_key, requested_at, deadline, iban_hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,"
            "$15,$16,$17,$18,$19) ON CONFLICT (refund_id) DO NOTHING",
            (d["refund_id"], d["beneficiary_id"], d["agency"], d["service_code"], d["amount"],
             fields.seal(d["iban"]), bank_code(d["iban"]), d["channel"], d.get("route", "BANK"),
             d.get("state", "AWAITING_HOLD"), d.get("route_owner", "BANK"), d.get("rules_version", ""),
             d.get("third_party_payer", False), json.dumps(fields.seal_ibans(reference)),
             reference.get("payment_id"), visa_key(reference), parse_time(d["requested_at"]),
             parse_time(d["deadline"]) if "deadline" in d else e.time, fields.lookup(d["iban"]))),
        Statement(_PAYMENT_REFUND_STATE, (d["refund_id"],)),
    ]


def _refund_update(sql: str, *columns: str) -> Projector:
    """A projector that sets columns of the refund named by the event (and the refund state
    of the payment it refunds, for a visa fee)."""
    statement = f"UPDATE audit.refunds SET {sql}, updated_at = now() WHERE refund_id = $1"  # noqa: S608 - sql is one of the constants below

    def project(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
        values = [parse_time(e.data[f]) if f.endswith("_at") else e.data.get(f) for f in columns]
        return [Statement(statement, (e.data["refund_id"], *values)),
                Statement(_PAYMENT_REFUND_STATE, (e.data["refund_id"],))]
    return project


def _visa_upsert(columns: dict[str, str]) -> Projector:
    """Insert the visa row if new and set ``columns`` (column -> data field) from the event."""
    names = list(columns)
    sets = ", ".join(f"{name} = COALESCE(${i + 5}, v.{name})" for i, name in enumerate(names))
    statement = (
        f"INSERT INTO audit.visas AS v (visa_key, sponsor_id, export_number, serial_number, {', '.join(names)}) "  # noqa: S608 - constant columns
        f"VALUES ($1, $2, $3, $4, {', '.join(f'${i + 5}' for i in range(len(names)))}) "
        f"ON CONFLICT (visa_key) DO UPDATE SET {sets}, updated_at = now()")

    def project(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
        d = e.data
        values = [parse_time(d[f]) if f.endswith("_at") and d.get(f) else d.get(f) for f in columns.values()]
        return [Statement(statement, (visa_key(d), d["sponsor_id"], d["export_number"], d["serial_number"],
                                      *values))]
    return project


def _visa_status(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    d = e.data
    return [Statement(
        "INSERT INTO audit.visas AS v (visa_key, sponsor_id, export_number, serial_number, status, status_changed_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (visa_key) DO UPDATE SET status = EXCLUDED.status, "
        "status_changed_at = EXCLUDED.status_changed_at, updated_at = now() "
        "WHERE v.status_changed_at IS NULL OR v.status_changed_at <= EXCLUDED.status_changed_at",
        (visa_key(d), d["sponsor_id"], d["export_number"], d["serial_number"], d["status"],
         parse_time(d["changed_at"])))]


def _status_mismatch(e: LedgerEvent, fields: FieldCipher) -> list[Statement]:
    d = e.data
    # an upsert: ledger.refunds and ledger.visas carry no order between them, and the flag must not be
    # lost when it is projected before the visa (a rebuild, which replays visas first, would show it)
    return [Statement(
        "INSERT INTO audit.visas AS v (visa_key, sponsor_id, export_number, serial_number, status, status_changed_at, "
        "status_mismatch_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (visa_key) DO UPDATE SET "
        "status_mismatch_at = EXCLUDED.status_mismatch_at, status = COALESCE(v.status, EXCLUDED.status), "
        "status_changed_at = COALESCE(v.status_changed_at, EXCLUDED.status_changed_at), updated_at = now()",
        (visa_key(d), d["sponsor_id"], d["export_number"], d["serial_number"], d["status"],
         parse_time(d["status_changed_at"]), parse_time(d["flagged_at"])))]


VISA_ISSUED = {"visa_type": "visa_type", "payment_id": "payment_id", "fee": "fee", "issued_at": "issued_at"}
VISA_REQUESTED = {"cancellation_requested_at": "requested_at", "cancellation_channel": "channel"}
VISA_ROUTED = {**VISA_ISSUED, **VISA_REQUESTED, "route": "route", "route_rule": "rule", "route_reason": "reason",
               "rules_version": "rules_version", "hours_since_issue": "hours_since_issue"}


PROJECTORS: dict[str, Projector] = {
    "ledger.payment.recorded": _payment_recorded,
    "ledger.refund.requested": _refund_requested,
    "event.rejected": _rejected,
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
    "ledger.refund.overdue": _refund_update(
        "overdue = true, overdue_at = $2, overdue_owner = $3", "marked_at", "owner"),
}

#: One batch's new ledger events, stored in one statement: column arrays, unnested.
_INSERT_EVENTS = (
    "INSERT INTO audit.ledger_events (event_id, topic, type, source, origin_source, origin_id, "
    "origin_type, subject, beneficiary_id, payment_id, refund_id, visa_key, occurred_at, recorded_at, data) "
    "SELECT e.event_id, e.topic, e.type, e.source, e.origin_source, e.origin_id, e.origin_type, e.subject, "
    "e.beneficiary_id, e.payment_id, e.refund_id, e.visa_key, e.occurred_at, e.recorded_at, e.data::jsonb "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], "
    "$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[], "
    "$15::text[]) AS e(event_id, topic, type, source, origin_source, origin_id, origin_type, subject, "
    "beneficiary_id, payment_id, refund_id, visa_key, occurred_at, recorded_at, data) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
_INSERT_ERROR = (
    "INSERT INTO audit.projection_errors (topic, kafka_partition, kafka_offset, error, raw) "
    "VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING")
#: What one event can fail with: unreadable or incomplete (building its statements), or refused by the
#: read model's types and constraints (running them). Kept in ``projection_errors``; the batch goes on.
PROJECTION_FAILURES = (UnreadableEvent, KeyError, TypeError, ValueError, asyncpg.DataError,
                       asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class _Prepared:
    """One ledger message, ready to apply: its ``ledger_events`` row and its projector's statements."""

    message: RawMessage
    topic: str
    event: LedgerEvent
    row: tuple[Any, ...]
    statements: list[Statement]


@dataclass(frozen=True)
class _Failed:
    message: RawMessage
    topic: str
    error: Exception


#: The columns of an event's ``ledger_events`` row that name what it is about: person, payment, refund, visa.
_ABOUT = {"beneficiary_id": 8, "payment_id": 9, "refund_id": 10, "visa_key": 11}


def _runs(events: Sequence[_Prepared]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """A batch's statements as runs of one SQL each (one ``executemany`` per run), ordered to leave the
    read model as running them event by event does.

    Events go into waves: an event lands in the wave after the last one holding an earlier event about
    the same person, payment, refund or visa, so within a wave no two events are about the same thing and
    each thing's events stay in order across waves. (An event about none of these, a rejection, waits for
    every earlier event and every later one waits for it.) A wave runs its events' first statements, then
    their second ones, and so on, each position as one run per SQL, events in batch order within a run.
    What one event's statements do to another thing's rows (a refund's state copied to its payment) is
    written to be order-free already: topics carry no order between them.
    """
    waves: list[list[_Prepared]] = []
    last_wave: dict[tuple[str, Any], int] = {}
    floor = 0  # no event may land before this wave (set by an event about nothing named)
    for event in events:
        if not event.statements:
            continue  # stored in ledger_events only: nothing to order
        about = [(name, event.row[column]) for name, column in _ABOUT.items() if event.row[column] is not None]
        if about:
            wave = max([floor, *(last_wave[key] + 1 for key in about if key in last_wave)])
        else:
            wave = len(waves)
            floor = wave + 1
        for key in about:
            last_wave[key] = wave
        while len(waves) <= wave:
            waves.append([])
        waves[wave].append(event)
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    for wave_events in waves:
        for position in range(max((len(e.statements) for e in wave_events), default=0)):
            by_sql: dict[str, list[tuple[Any, ...]]] = {}
            for e in wave_events:
                if position < len(e.statements):
                    statement = e.statements[position]
                    by_sql.setdefault(statement.sql, []).append(statement.args)
            runs.extend(by_sql.items())
    return runs


class _StatementFailed(Exception):
    """A statement of a set-based batch was refused; the batch is redone one event at a time."""



class Projection:
    """Applies batches of ledger messages to the read model."""

    def __init__(self, pool: asyncpg.Pool, topic_prefix: str = "", fields: FieldCipher = CLEAR) -> None:
        self.pool = pool
        self.topic_prefix = topic_prefix
        self.fields = fields  # CIPHER_KEY set: IBANs (and raw rejected messages) stored sealed
        self.statements = 0   # read-model statements run by batches that committed whole (the set path)
        self.round_trips = 0  # and the round trips they took: one per run of the same statement, + the events

    def logical(self, topic: str) -> str:
        return topic.removeprefix(self.topic_prefix)

    async def apply(self, messages: Sequence[RawMessage]) -> int:
        """Apply a batch in one transaction; return how many events were new.

        Set-based: every event's statements are built first (an event that cannot be read, or lacks a
        field, fails there alone), the batch's events are stored in ``ledger_events`` with one
        statement (the ones already there are skipped: redelivered, or twice in the batch), and the new
        events' statements run in waves of events about different things (``_runs``), each statement
        of a wave as one ``executemany``: tens of round trips per batch instead of one or two per
        event. If the read model refuses a statement (a type or a constraint), the batch is rolled back
        and applied again one event at a time, each in a savepoint, so only the refused event goes to
        ``projection_errors``. Metrics count what committed, once.
        """
        prepared, failed = self._prepare(messages)
        try:
            new = await self._apply_set(prepared, failed)
        except _StatementFailed:
            new = await self._apply_each(prepared, failed)
        _count(new)
        return len(new)

    def _prepare(self, messages: Sequence[RawMessage]) -> tuple[list[_Prepared], list[_Failed]]:
        prepared: list[_Prepared] = []
        failed: list[_Failed] = []
        ids: set[str] = set()
        for message in messages:
            topic = self.logical(message.topic)
            try:
                event = read(message, topic)
                projector = PROJECTORS.get(event.type)
                item = _Prepared(message, topic, event, self._row(event, topic),
                                 projector(event, self.fields) if projector is not None else [])
            except (UnreadableEvent, KeyError, TypeError, ValueError, AttributeError) as error:
                failed.append(_Failed(message, topic, error))
                continue
            if event.id not in ids:  # twice in one batch: the first copy applies
                ids.add(event.id)
                prepared.append(item)
        return prepared, failed

    def _row(self, event: LedgerEvent, topic: str) -> tuple[Any, ...]:
        """The event's ``ledger_events`` row (the columns of ``_INSERT_EVENTS``)."""
        origin = event.data.get("origin") or {}
        # jsonb cannot hold NUL characters; a rejected message may contain them.
        data = json.dumps(self._stored_data(event), ensure_ascii=False).replace("\\u0000", "\\ufffd")
        return (event.id, topic, event.type, event.source, origin.get("source"), origin.get("id"),
                origin.get("type"), event.subject, event.data.get("beneficiary_id"), event.data.get("payment_id"),
                event.data.get("refund_id"), visa_key(event.data), event.time, event.recorded_at, data)

    async def _apply_set(self, prepared: list[_Prepared], failed: list[_Failed]) -> list[_Prepared]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._keep_errors(conn, failed)
            if not prepared:
                return []
            try:
                columns = zip(*(p.row for p in prepared), strict=True)
                stored = await conn.fetch(_INSERT_EVENTS, *(list(column) for column in columns))
                inserted = {row["event_id"] for row in stored}
                new = [p for p in prepared if p.event.id in inserted]
                statements, round_trips = 0, 1
                for sql, args in _runs(new):
                    if len(args) == 1:
                        await conn.execute(sql, *args[0])
                    else:
                        await conn.executemany(sql, args)
                    statements, round_trips = statements + len(args), round_trips + 1
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
                raise _StatementFailed from error  # rolls the batch back
        self.statements += statements
        self.round_trips += round_trips
        return new

    async def _apply_each(self, prepared: list[_Prepared], failed: list[_Failed]) -> list[_Prepared]:
        new: list[_Prepared] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await self._keep_errors(conn, failed)
            for p in prepared:
                try:
                    async with conn.transaction():
                        if not await conn.fetch(_INSERT_EVENTS, *([value] for value in p.row)):
                            continue  # already projected
                        for s in p.statements:
                            await conn.execute(s.sql, *s.args)
                except PROJECTION_FAILURES as error:
                    await self._keep_errors(conn, [_Failed(p.message, p.topic, error)])
                else:
                    new.append(p)
        return new

    async def _keep_errors(self, conn: asyncpg.Connection, failed: list[_Failed]) -> None:
        for f in failed:
            log.error("ledger message not projected: %s", f.error, extra={"topic": f.topic, "offset": f.message.offset})
        if failed:
            await conn.executemany(_INSERT_ERROR, [
                (f.topic, f.message.partition, f.message.offset,
                 self.fields.seal_ibans(f"{type(f.error).__name__}: {f.error}"[:1000]),
                 self.fields.seal_bytes(f.message.value)) for f in failed])

    def _stored_data(self, event: LedgerEvent) -> dict[str, Any]:
        """The event's data as ``ledger_events`` keeps it: with a key, every IBAN-holding string sealed,
        and a rejected message's raw key and value sealed whole (base64 or broken text hides nothing)."""
        data = self.fields.seal_ibans(event.data)
        original = data.get("original")
        if self.fields.keyed and event.type == "event.rejected" and isinstance(original, dict):
            data["original"] = {k: self.fields.seal(v) if k in {"key", "value"} and isinstance(v, str) else v
                                for k, v in original.items()}
        return data


def _count(new: Sequence[_Prepared]) -> None:
    """Metrics of a committed batch: events applied, and SLA breaches (each overdue event is new: once)."""
    for (topic, event_type), n in collections.Counter((p.topic, p.event.type) for p in new).items():
        metrics.PROJECTION_APPLIED.labels(topic, event_type).inc(n)
    for p in new:
        if p.event.type == "ledger.refund.overdue":
            metrics.SLA_BREACHES.labels(p.event.data["route"], p.event.data["owner"]).inc()


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
