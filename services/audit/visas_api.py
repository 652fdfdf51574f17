"""Audit API routes for visa cases and the status-mismatch exception list."""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.audit.api import ID_PATTERN, PERSON_PATTERN, TIMELINE_COLUMNS, Pool, _pii, _timeline, local, require
from services.audit.export import CSV_RESPONSE, stream_csv
from services.audit.refunds_api import READ_ROLES, LiaisonView, Sla, keyset_page, liaison_view, next_owner, sla_of
from services.kit import liaisons
from services.kit.auth import Principal
from services.kit.calendar import BusinessCalendar
from services.kit.pii import CLEAR, FieldCipher
from services.kit.rules import Rules

SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"


class VisaCase(BaseModel):
    sponsor_id: str
    export_number: str
    serial_number: str
    visa_type: str | None
    payment_id: str | None
    fee: int | None
    issued_at: str | None
    cancellation_requested_at: str | None
    cancelled_at: str | None = Field(description="When Musaned accepted the cancellation.")
    cancellation_channel: str | None
    route: str | None = Field(description="AUTOMATIC, MOFA, MANUAL_REVIEW or NON_REFUNDABLE.")
    route_reason: str | None
    rules_version: str | None
    hours_since_issue: float | None
    status: str | None
    status_changed_at: str | None
    status_mismatch: bool
    refund_id: str | None
    refund_state: str | None
    refunded_at: str | None
    bank_reference: str | None
    sla: Sla | None
    next_step_owner: str | None = Field(description="The agency owning the refund's next step, while it is open.")
    liaison: LiaisonView | None = Field(description="Whom to call at that agency.")
    timeline: list[Any]


class Mismatch(BaseModel):
    sponsor_id: str
    export_number: str
    serial_number: str
    status: str | None
    status_changed_at: str | None
    flagged_at: str
    route: str | None


class MismatchPage(BaseModel):
    items: list[Mismatch]
    next_cursor: str | None


def create_visas_router(pool: Pool, secret: str, rules: Rules,
                        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                        registry: liaisons.Registry | None = None, fields: FieldCipher = CLEAR) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    contacts = registry or liaisons.registry()
    calendar = BusinessCalendar.from_rules(rules)
    reader = require(READ_ROLES, secret)

    @router.get("/visas/{sponsor_id}/{export_number}/{serial_number}", response_model=VisaCase, tags=["visas"],
                responses={404: {"description": "No such visa"}})
    async def visa_case(
        sponsor_id: Annotated[str, Path(pattern=PERSON_PATTERN)],
        export_number: Annotated[str, Path(pattern=ID_PATTERN)],
        serial_number: Annotated[str, Path(pattern=SERIAL_PATTERN)],
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> VisaCase:
        """The visa, its cancellation, route, refund and SLA, with the full timeline."""
        key = f"{sponsor_id}/{export_number}/{serial_number}"
        async with db.acquire() as conn:
            visa = await conn.fetchrow("SELECT * FROM audit.visas WHERE visa_key = $1", key)
            if visa is None:
                raise HTTPException(404, f"visa {key} is not in the ledger")
            refund = fields.open_row(await conn.fetchrow("SELECT * FROM audit.refunds WHERE visa_key = $1", key))
            events = [fields.open_row(e) for e in await conn.fetch(
                f"SELECT {TIMELINE_COLUMNS} "  # noqa: S608 - constants only
                "FROM audit.ledger_events WHERE visa_key = $1 OR ($2::text IS NOT NULL AND refund_id = $2) "
                "ORDER BY occurred_at, recorded_at, event_id", key, refund["refund_id"] if refund else None)]
        owner = next_owner(refund["state"], refund["route"]) if refund else None
        return VisaCase(
            sponsor_id=_pii(sponsor_id, principal), export_number=export_number, serial_number=serial_number,
            visa_type=visa["visa_type"], payment_id=visa["payment_id"], fee=visa["fee"],
            issued_at=local(visa["issued_at"]), cancellation_requested_at=local(visa["cancellation_requested_at"]),
            cancelled_at=local(visa["cancelled_at"]), cancellation_channel=visa["cancellation_channel"],
            route=visa["route"], route_reason=visa["route_reason"], rules_version=visa["rules_version"],
            hours_since_issue=visa["hours_since_issue"], status=visa["status"],
            status_changed_at=local(visa["status_changed_at"]), status_mismatch=visa["status_mismatch_at"] is not None,
            refund_id=refund["refund_id"] if refund else None, refund_state=refund["state"] if refund else None,
            refunded_at=local(refund["completed_at"]) if refund else None,
            bank_reference=refund["bank_reference"] if refund else None,
            sla=sla_of(refund, calendar, clock()) if refund else None,
            next_step_owner=owner, liaison=liaison_view(contacts, owner, refund["iban"] if refund else None),
            timeline=_timeline(events))

    @router.get("/visas/status-mismatches", response_model=MismatchPage, tags=["exceptions"])
    async def status_mismatches(
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> MismatchPage:
        """Visas whose status says fees restored while no bank completion arrived by the deadline."""
        page, next_cursor = await keyset_page(db, "audit.visas", ("status_mismatch_at", "visa_key"), cursor, limit,
                                              condition="status_mismatch_at IS NOT NULL")
        return MismatchPage(items=[Mismatch(
            sponsor_id=_pii(r["sponsor_id"], principal), export_number=r["export_number"],
            serial_number=r["serial_number"], status=r["status"], status_changed_at=local(r["status_changed_at"]),
            flagged_at=local(r["status_mismatch_at"]), route=r["route"]) for r in page], next_cursor=next_cursor)

    @router.get("/visas/status-mismatches.csv", tags=["exceptions", "export"], response_class=StreamingResponse,
                responses=CSV_RESPONSE)
    async def export_status_mismatches(
        request: Request,
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> StreamingResponse:
        """The status-mismatch list as CSV, oldest flag first, streamed; recorded in the access log with its rows."""
        return await stream_csv(
            request, db, "SELECT * FROM audit.visas WHERE status_mismatch_at IS NOT NULL "
                         "ORDER BY status_mismatch_at, visa_key", (),
            ("sponsor_id", "export_number", "serial_number", "status", "status_changed_at", "flagged_at", "route"),
            lambda r: [_pii(r["sponsor_id"], principal), r["export_number"], r["serial_number"], r["status"],
                       local(r["status_changed_at"]), local(r["status_mismatch_at"]), r["route"]],
            "status-mismatches.csv")

    return router
