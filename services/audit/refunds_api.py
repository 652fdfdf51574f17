"""Audit API routes for refund cases, unreflected payments and the Jawazat queue.

Lists are keyset-paginated (an opaque ``cursor``) and sorted; every filter is
a fixed SQL fragment with a bound parameter, never text built from input.
"""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.audit.api import ID_PATTERN, Pool, _pii, _timeline, case_with_timeline, local, require
from services.audit.export import CSV_RESPONSE, stream_csv
from services.kit import liaisons
from services.kit.auth import Principal
from services.kit.calendar import BusinessCalendar
from services.kit.catalogue import Catalogue
from services.kit.iban import bank_name
from services.kit.identity import PERSON_FIELDS
from services.kit.pii import CLEAR, FieldCipher
from services.kit.rules import Rules

log = logging.getLogger(__name__)

READ_ROLES = frozenset({"auditor", "agent", "jawazat", "mofa", "admin"})
STATES = ("AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW", "ORDERED", "REJECTED", "COMPLETED", "FAILED")
OPEN_STATES = ("AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW", "ORDERED")
Status = Literal["open", "overdue", "AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW", "ORDERED", "REJECTED",
                 "COMPLETED", "FAILED"]
Route = Literal["BANK", "AUTOMATIC", "MOFA", "JAWAZAT", "MANUAL_REVIEW"]
#: Publishes a decision command (type, data) and returns its CloudEvent id.
Decide = Callable[[str, dict[str, Any]], Awaitable[str]]


class Sla(BaseModel):
    deadline: str
    status: Literal["ON_TIME", "DUE_SOON", "OVERDUE", "MET", "MISSED", "CLOSED"]
    business_days_elapsed: int


class RefundSummary(BaseModel):
    refund_id: str
    beneficiary_id: str
    agency: str
    service_code: str
    amount: int
    iban: str
    bank_code: str
    bank_name: str | None
    channel: str
    route: str
    state: str
    overdue: bool
    requested_at: str
    next_step_owner: str | None
    sla: Sla
    awaiting_second_approval: bool = Field(
        description="Four eyes: a first employee approved; a second, different one must approve before the order.")
    first_approved_by: str | None = Field(description="Who made the first approval (four eyes), if anyone.")
    first_approved_at: str | None


class LiaisonView(BaseModel):
    """Whom to call at the agency owning the next step (``reference/liaisons.json``)."""

    agency: str
    name: dict[str, str] = Field(description="The liaison's name by language (ar, en).")
    role: str
    phone: str
    email: str


class RefundPage(BaseModel):
    items: list[RefundSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class RefundCaseView(RefundSummary):
    liaison: LiaisonView | None = Field(description="The liaison of the agency owning the next step; "
                                                    "null once the case is closed.")
    tell_the_citizen: dict[str, str] | None = Field(
        description="What to tell the citizen, by language (Arabic first): the approved catalogue's words.")
    time_by_agency: dict[str, float] = Field(
        description="Hours the case spent with each agency (who held it), so a breach is charged to its cause.")
    route_owner: str
    rules_version: str
    third_party_payer: bool
    reference: dict[str, str]
    ordered_at: str | None
    decided_by: str | None
    decided_at: str | None
    rejection_rule: str | None
    rejection_reason: str | None
    bank_reference: str | None
    completed_at: str | None
    failed_at: str | None
    failure_reason: str | None
    timeline: list[Any]


class UnreflectedPayment(BaseModel):
    payment_id: str
    beneficiary_id: str
    agency: str
    service_code: str
    amount: int
    channel: str
    paid_at: str
    unreflected_since: str
    responsible_agency: str


class UnreflectedPage(BaseModel):
    items: list[UnreflectedPayment]
    next_cursor: str | None


class Decision(BaseModel):
    reason: str = Field(min_length=3, max_length=500, description="Why, in words the citizen is told.")


class DecisionAccepted(BaseModel):
    refund_id: str
    decision: Literal["approved", "declined"]
    command_id: str = Field(description="The CloudEvent id of the decision sent to the refunds service.")
    second_approval_needed: bool = Field(
        False, description="Four eyes: this is the first approval of an amount above the threshold; the case "
                           "stays in the queue until a second, different employee approves.")


def liaison_view(registry: liaisons.Registry, agency: str | None, iban: str | None) -> LiaisonView | None:
    """The liaison of ``agency`` (a bank's own when the IBAN names one); None when no one owns a next step."""
    if agency is None:
        return None
    contact = registry.for_agency(agency, iban)
    return LiaisonView(agency=contact.agency, name={"ar": contact.name_ar, "en": contact.name}, role=contact.role,
                       phone=contact.phone, email=contact.email)


#: Who holds a case before and after its bank order, by route.


def citizen_line(row: asyncpg.Record, now: datetime) -> dict[str, str] | None:
    """The catalogue's line for this case in every language; None if the catalogue has none."""
    catalogue = Catalogue.load()
    facts = {**{k: row[k] for k in ("refund_id", "amount", "iban", "deadline", "requested_at", "ordered_at",
                                    "completed_at", "failed_at", "bank_reference", "agency", "service_code",
                                    "beneficiary_id", "channel", "route", "state")},
             "rejected_at": row["decided_at"], "rule": row["rejection_rule"],
             "owner": next_owner(row["state"], row["route"]) or row["route_owner"]}
    overdue = row["state"] in OPEN_STATES and now > row["deadline"]
    try:
        return {language: catalogue.tell_the_citizen(row["state"], row["route"], language, facts, overdue=overdue)
                for language in catalogue.languages}
    except (LookupError, ValueError) as error:  # a state the catalogue has no words for: say nothing wrong
        log.warning("no citizen line for refund %s: %s", row["refund_id"], error)
        return None


def time_by_agency(row: asyncpg.Record, now: datetime) -> dict[str, float]:
    """Hours each agency held the case: from the request to the order, then to the close (or now)."""
    closed = row["completed_at"] or row["failed_at"] or (row["decided_at"] if row["state"] == "REJECTED" else None)
    end = closed or now
    ordered = row["ordered_at"]
    spans = [(MATRIX.holder_before_order(row["route"], row["route_owner"]), row["requested_at"], ordered or end)]
    if ordered is not None:
        spans.append((MATRIX.holder_after_order(row["route"]), ordered, end))
    held: dict[str, float] = {}
    for agency, start, stop in spans:
        hours = max(0.0, (stop - start).total_seconds() / 3600)
        held[agency] = round(held.get(agency, 0.0) + hours, 2)
    return held


MAX_DECIDER = 128  # the decision schemas' limit on decided_by

MATRIX = liaisons.responsibility()
next_owner = MATRIX.refund_owner


def encode_cursor(*values: Any) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, str) for v in values)):
            raise ValueError("not a cursor")
        return [datetime.fromisoformat(values[0]), values[1]]
    except (ValueError, TypeError, binascii.Error):
        raise HTTPException(422, "cursor is not one this API issued") from None


def sla_of(row: asyncpg.Record, calendar: BusinessCalendar, now: datetime) -> Sla:
    deadline = row["deadline"]
    end = row["completed_at"] or row["failed_at"] or row["decided_at"] if row["state"] not in OPEN_STATES else now
    if row["state"] == "COMPLETED":
        status = "MET" if row["completed_at"] <= deadline else "MISSED"
    elif row["state"] in OPEN_STATES:
        status = calendar.sla_status(deadline, now)
    else:
        status = "CLOSED"
    elapsed = calendar.business_days_between(row["requested_at"], end or now)
    return Sla(deadline=local(deadline), status=status, business_days_elapsed=elapsed)


def summary(row: asyncpg.Record, principal: Principal, calendar: BusinessCalendar, now: datetime) -> dict[str, Any]:
    return {
        "refund_id": row["refund_id"], "beneficiary_id": _pii(row["beneficiary_id"], principal),
        "agency": row["agency"], "service_code": row["service_code"], "amount": row["amount"],
        "iban": _pii(row["iban"], principal), "bank_code": row["bank_code"], "bank_name": bank_name(row["iban"]),
        "channel": row["channel"], "route": row["route"], "state": row["state"], "overdue": row["overdue"],
        "requested_at": local(row["requested_at"]),
        "next_step_owner": next_owner(row["state"], row["route"]),
        "sla": sla_of(row, calendar, now),
        "awaiting_second_approval": row["first_approved_by"] is not None and row["state"] == "JAWAZAT_QUEUE",
        "first_approved_by": row["first_approved_by"], "first_approved_at": local(row["first_approved_at"]),
    }


async def keyset_page(db: asyncpg.Pool, table: str, order: tuple[str, str], cursor: str | None, limit: int,
                      filters: list[tuple[str, Any]] | None = None, *, condition: str = "TRUE",
                      newest_first: bool = False, tiebreak: Callable[[str], Any] = str,
                      fields: FieldCipher = CLEAR) -> tuple[list, str | None]:
    """One page of ``table`` rows, sorted by ``order`` (oldest or newest first), and the next cursor.

    ``table``, ``condition``, ``order`` and the filter fragments (``?`` marks the value) are constants
    of this package; every value (filters, cursor, limit) is a bound parameter. ``tiebreak`` turns
    the cursor's second key back into its column's type; ``fields`` opens sealed values.
    """
    sql, args = filtered(table, filters, condition)
    if cursor:
        at, key = decode_cursor(cursor)
        try:
            args.extend([at, tiebreak(key)])
        except ValueError:
            raise HTTPException(422, "cursor is not one this API issued") from None
        sql += f" AND ({order[0]}, {order[1]}) {'<' if newest_first else '>'} (${len(args) - 1}, ${len(args)})"
    args.append(limit + 1)
    direction = " DESC" if newest_first else ""
    sql += f" ORDER BY {order[0]}{direction}, {order[1]}{direction} LIMIT ${len(args)}"
    async with db.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    page = [fields.open_row(r) for r in rows[:limit]]
    next_cursor = encode_cursor(page[-1][order[0]], str(page[-1][order[1]])) if len(rows) > limit else None
    return page, next_cursor


def filtered(table: str, filters: list[tuple[str, Any]] | None, condition: str = "TRUE") -> tuple[str, list[Any]]:
    """``SELECT * FROM table WHERE condition AND <filters>`` with the values as bound parameters."""
    args: list[Any] = []
    sql = f"SELECT * FROM {table} WHERE {condition}"  # noqa: S608 - constants only
    for fragment, value in filters or []:
        args.append(value)
        sql += " AND " + fragment.replace("?", f"${len(args)}")
    return sql, args


#: The columns of a refunds export, in order.
REFUND_CSV = ("refund_id", "beneficiary_id", "agency", "service_code", "amount_halalas", "iban", "bank_code",
              "channel", "route", "state", "overdue", "requested_at", "deadline", "ordered_at", "decided_by",
              "decided_at", "completed_at", "bank_reference", "failed_at", "failure_reason")


def refund_csv_values(row: asyncpg.Record, principal: Principal) -> list[Any]:
    return [row["refund_id"], _pii(row["beneficiary_id"], principal), row["agency"], row["service_code"],
            row["amount"], _pii(row["iban"], principal), row["bank_code"], row["channel"], row["route"],
            row["state"], "true" if row["overdue"] else "false", local(row["requested_at"]), local(row["deadline"]),
            local(row["ordered_at"]), row["decided_by"], local(row["decided_at"]), local(row["completed_at"]),
            row["bank_reference"], local(row["failed_at"]), row["failure_reason"]]


def refund_filters(status: str | None, route: str | None, agency: str | None, from_: datetime | None,
                   to: datetime | None) -> list[tuple[str, Any]]:
    """The filters of a refunds search as constant fragments and their values."""
    filters: list[tuple[str, Any]] = []
    if status == "overdue":
        filters.append(("overdue AND state = ANY(?)", list(OPEN_STATES)))
    elif status == "open":
        filters.append(("state = ANY(?)", list(OPEN_STATES)))
    elif status:
        filters.append(("state = ?", status))
    if route:
        filters.append(("route = ?", route))
    if agency:
        filters.append(("agency = ?", agency))
    for bound, fragment in ((from_, "requested_at >= ?"), (to, "requested_at < ?")):
        if bound is not None:
            if bound.tzinfo is None:
                raise HTTPException(422, "from/to need a UTC offset, e.g. 2026-11-01T00:00:00+03:00")
            filters.append((fragment, bound))
    return filters


def create_refunds_router(
        pool: Pool, secret: str, rules: Rules, decide: Decide | None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        registry: liaisons.Registry | None = None, fields: FieldCipher = CLEAR) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    contacts = registry or liaisons.registry()
    calendar = BusinessCalendar.from_rules(rules)
    reader = require(READ_ROLES, secret)

    @router.get("/refunds", response_model=RefundPage, tags=["refunds"])
    async def list_refunds(
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        status: Annotated[Status | None, Query(description="A case state, `open`, or `overdue`.")] = None,
        route: Route | None = None,
        agency: Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")] = None,
        from_: Annotated[datetime | None, Query(alias="from", description="requested at or after")] = None,
        to: Annotated[datetime | None, Query(description="requested before")] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> RefundPage:
        """Refund cases, newest request first, filtered; `status=overdue` lists the open cases past deadline."""
        page, next_cursor = await keyset_page(db, "audit.refunds", ("requested_at", "refund_id"), cursor, limit,
                                              refund_filters(status, route, agency, from_, to), newest_first=True,
                                              fields=fields)
        now = clock()
        return RefundPage(items=[RefundSummary(**summary(r, principal, calendar, now)) for r in page],
                          next_cursor=next_cursor)

    @router.get("/refunds.csv", tags=["refunds", "export"], response_class=StreamingResponse,
                responses=CSV_RESPONSE)
    async def export_refunds(
        request: Request,
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        status: Annotated[Status | None, Query(description="A case state, `open`, or `overdue`.")] = None,
        route: Route | None = None,
        agency: Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")] = None,
        from_: Annotated[datetime | None, Query(alias="from", description="requested at or after")] = None,
        to: Annotated[datetime | None, Query(description="requested before")] = None,
    ) -> StreamingResponse:
        """Every refund case the same filters as `GET /refunds` select, newest request first, as CSV,
        streamed from a server-side cursor (IDs and IBANs masked as in the JSON answers).
        The access log records the export when it ends, with the rows sent."""
        sql, args = filtered("audit.refunds", refund_filters(status, route, agency, from_, to))
        return await stream_csv(request, db, sql + " ORDER BY requested_at DESC, refund_id DESC", args, REFUND_CSV,
                          lambda row: refund_csv_values(fields.open_row(row), principal), "refunds.csv")

    @router.get("/refunds/{refund_id}", response_model=RefundCaseView, tags=["refunds"],
                responses={404: {"description": "No such refund"}})
    async def refund_case(
        refund_id: Annotated[str, Path(pattern=ID_PATTERN)],
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> RefundCaseView:
        """One refund case: the audit facts, SLA and the full timeline."""
        row, events = await case_with_timeline(db, "refund", refund_id, fields)
        reference = row["reference"] if isinstance(row["reference"], dict) else json.loads(row["reference"])
        now = clock()
        return RefundCaseView(
            **summary(row, principal, calendar, now), tell_the_citizen=citizen_line(row, now),
            liaison=liaison_view(contacts, next_owner(row["state"], row["route"]), row["iban"]),
            time_by_agency=time_by_agency(row, now),
            route_owner=row["route_owner"],
            rules_version=row["rules_version"], third_party_payer=row["third_party_payer"],
            reference={k: _pii(str(v), principal) if k in PERSON_FIELDS else str(v) for k, v in reference.items()},
            ordered_at=local(row["ordered_at"]),
            decided_by=row["decided_by"], decided_at=local(row["decided_at"]),
            rejection_rule=row["rejection_rule"], rejection_reason=row["rejection_reason"],
            bank_reference=row["bank_reference"], completed_at=local(row["completed_at"]),
            failed_at=local(row["failed_at"]), failure_reason=row["failure_reason"], timeline=_timeline(events))

    @router.get("/payments/unreflected", response_model=UnreflectedPage, tags=["exceptions"])
    async def unreflected_payments(
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        agency: Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> UnreflectedPage:
        """Payments no agency system acknowledged in time, oldest first, with the agency responsible."""
        page, next_cursor = await keyset_page(
            db, "audit.payments", ("unreflected_since", "payment_id"), cursor, limit,
            [("agency = ?", agency)] if agency else [], condition="unreflected_since IS NOT NULL")
        return UnreflectedPage(
            items=[UnreflectedPayment(
                payment_id=r["payment_id"], beneficiary_id=_pii(r["beneficiary_id"], principal), agency=r["agency"],
                service_code=r["service_code"], amount=r["amount"], channel=r["channel"], paid_at=local(r["paid_at"]),
                unreflected_since=local(r["unreflected_since"]), responsible_agency=r["agency"]) for r in page],
            next_cursor=next_cursor)

    @router.get("/payments/unreflected.csv", tags=["exceptions", "export"], response_class=StreamingResponse,
                responses=CSV_RESPONSE)
    async def export_unreflected(
        request: Request,
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        agency: Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")] = None,
    ) -> StreamingResponse:
        """The unreflected payments list as CSV, oldest first, streamed; recorded in the access log with its rows."""
        sql, args = filtered("audit.payments", [("agency = ?", agency)] if agency else [],
                             "unreflected_since IS NOT NULL")
        return await stream_csv(
            request, db, sql + " ORDER BY unreflected_since, payment_id", args,
            ("payment_id", "beneficiary_id", "agency", "service_code", "amount_halalas", "channel", "paid_at",
             "unreflected_since", "responsible_agency"),
            lambda r: [r["payment_id"], _pii(r["beneficiary_id"], principal), r["agency"], r["service_code"],
                       r["amount"], r["channel"], local(r["paid_at"]), local(r["unreflected_since"]), r["agency"]],
            "unreflected-payments.csv")

    for queue in QUEUES:
        add_queue_routes(router, queue, pool, secret, calendar, decide, clock, rules, fields)
    return router


@dataclass(frozen=True)
class Queue:
    """A work queue of refunds waiting for an agency's staff."""

    state: str              # the case state of a refund in this queue
    path: str               # URL prefix under /api/v1
    agency: str
    readers: frozenset[str]
    deciders: frozenset[str]
    waiting: str            # what waits, for the docs


QUEUES = (
    Queue("JAWAZAT_QUEUE", "/jawazat", "Jawazat", frozenset({"jawazat", "admin", "auditor"}),
          frozenset({"jawazat"}), "Absher pre-SADAD requests"),
    Queue("MANUAL_REVIEW", "/reviews", "MoFA", frozenset({"mofa", "admin", "auditor"}),
          frozenset({"mofa"}), "visa refunds in manual review (e.g. visas from the COVID window)"),
)


def add_queue_routes(router: APIRouter, queue: Queue, pool: Pool, secret: str, calendar: BusinessCalendar,
                     decide: Decide | None, clock: Callable[[], datetime], rules: Rules,
                     fields: FieldCipher = CLEAR) -> None:
    """``GET {path}/queue`` and ``POST {path}/refunds/{id}/approve|reject`` for one queue."""
    reader, decider = require(queue.readers, secret), require(queue.deciders, secret)
    tag = queue.path.strip("/")
    answers = {404: {"description": "No such refund"},
               409: {"description": "Not waiting in this queue, or (four eyes) the caller made its first approval"}}

    async def waiting(
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> RefundPage:
        page, next_cursor = await keyset_page(db, "audit.refunds", ("requested_at", "refund_id"), cursor, limit,
                                              condition=f"state = '{queue.state}'", fields=fields)
        now = clock()
        return RefundPage(items=[RefundSummary(**summary(r, principal, calendar, now)) for r in page],
                          next_cursor=next_cursor)

    four_eyes = queue.state == "JAWAZAT_QUEUE"  # the rules' threshold applies to Jawazat decisions

    async def send(refund_id: str, principal: Principal, db: asyncpg.Pool, event_type: str,
                   extra: dict[str, Any]) -> tuple[str, bool]:
        """Send the decision; its command id, and whether (four eyes) a second approval is still needed."""
        if decide is None:
            raise HTTPException(503, "decisions cannot be sent right now")
        async with db.acquire() as conn:
            row = await conn.fetchrow("SELECT state, amount, first_approved_by FROM audit.refunds "
                                      "WHERE refund_id = $1", refund_id)
        if row is None:
            raise HTTPException(404, f"refund {refund_id} is not in the ledger")
        if len(principal.subject) > MAX_DECIDER:
            raise HTTPException(422, f"the token's subject is longer than {MAX_DECIDER} characters")
        state = row["state"]
        if state != queue.state:
            raise HTTPException(409, f"refund {refund_id} is {state.lower()}, not waiting in the {queue.agency} queue")
        first_of_two = False
        if event_type == "refund.approved" and four_eyes and rules.needs_four_eyes(row["amount"]):
            if row["first_approved_by"] == principal.subject:
                raise HTTPException(409, f"four eyes: you made the first approval of refund {refund_id}; "
                                         f"a second, different {queue.agency} employee must approve it")
            first_of_two = row["first_approved_by"] is None
        command_id = await decide(event_type, {"refund_id": refund_id, "queue": queue.state,
                                               "decided_by": principal.subject, "decided_at": clock().isoformat(),
                                               **extra})
        return command_id, first_of_two

    async def approve(
        refund_id: Annotated[str, Path(pattern=ID_PATTERN)],
        principal: Annotated[Principal, Depends(decider)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> DecisionAccepted:
        command_id, first_of_two = await send(refund_id, principal, db, "refund.approved", {})
        return DecisionAccepted(refund_id=refund_id, decision="approved", command_id=command_id,
                                second_approval_needed=first_of_two)

    async def reject(
        refund_id: Annotated[str, Path(pattern=ID_PATTERN)],
        decision: Annotated[Decision, Body()],
        principal: Annotated[Principal, Depends(decider)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> DecisionAccepted:
        command_id, _ = await send(refund_id, principal, db, "refund.declined", {"reason": decision.reason})
        return DecisionAccepted(refund_id=refund_id, decision="declined", command_id=command_id)

    router.add_api_route(f"{queue.path}/queue", waiting, methods=["GET"], response_model=RefundPage, tags=[tag],
                         name=f"{tag}_queue", summary=f"{queue.waiting} waiting for {queue.agency}, oldest first")
    router.add_api_route(f"{queue.path}/refunds/{{refund_id}}/approve", approve, methods=["POST"], status_code=202,
                         response_model=DecisionAccepted, tags=[tag], responses=answers, name=f"{tag}_approve",
                         summary=f"{queue.agency} approves: the refunds service orders the bank to pay "
                                 "(above the four-eyes amount, after a second, different employee approves)")
    router.add_api_route(f"{queue.path}/refunds/{{refund_id}}/reject", reject, methods=["POST"], status_code=202,
                         response_model=DecisionAccepted, tags=[tag], responses=answers, name=f"{tag}_reject",
                         summary=f"{queue.agency} rejects, with the reason the citizen is told")
