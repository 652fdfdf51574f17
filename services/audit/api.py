"""The audit API: what MoF staff and the 19990 contact centre query.

Bearer-token auth on every ``/api/v1`` route (401 without a valid token, 403
for a role that may not), PII masked for roles that may not see it, times
shown in Asia/Riyadh with their offset.
"""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().

import json
import logging
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from services.kit.auth import InvalidToken, Principal, verify_token
from services.kit.catalogue import Catalogue
from services.kit.iban import bank_name, mask
from services.kit.pii import CLEAR, FieldCipher

log = logging.getLogger(__name__)

CONSOLE_DIR = pathlib.Path(__file__).with_name("console")  # the web console: static files, no build step

RIYADH = ZoneInfo("Asia/Riyadh")
READ_ROLES = frozenset({"auditor", "agent", "jawazat", "mofa", "admin"})
FULL_PII_ROLES = frozenset({"auditor", "admin"})
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
PERSON_PATTERN = r"^[12][0-9]{9}$"

_bearer = HTTPBearer(auto_error=False)
_UNAUTHORIZED = {401: {"description": "Missing, malformed, forged or expired bearer token"},
                 403: {"description": "The token's role may not use this endpoint"},
                 422: {"description": "A path or query parameter is malformed"}}


def local(value: datetime | None) -> str | None:
    """An aware time as RFC 3339 in Saudi time (the offset keeps it unambiguous)."""
    return value.astimezone(RIYADH).isoformat() if value is not None else None


class MessageView(BaseModel):
    """What the notifier told whom (``ledger.notification.*`` entries): the words as sent."""

    key: str
    audience: str
    channel: str | None
    address: str | None = None          # masked as the ledger records it
    language: str | None = None
    subject: str | None = None
    body: str | None = None
    reason: str | None = None           # why it was dead-lettered or superseded


class TimelineEntry(BaseModel):
    type: str
    source: str
    origin_type: str | None
    time: str
    recorded_at: str
    event_id: str
    message: MessageView | None = None


class BankView(BaseModel):
    code: str
    name: str | None


class PaymentCase(BaseModel):
    payment_id: str
    beneficiary_id: str
    payer_id: str
    payer_iban: str
    third_party_payer: bool
    agency: str
    service_code: str
    amount: int
    currency: str
    channel: str
    sadad_bill_number: str | None
    bank: BankView
    paid_at: str
    recorded_at: str
    acknowledged_at: str | None
    refund_state: str
    refunded_at: str | None
    timeline: list[TimelineEntry]


class BalanceLine(BaseModel):
    agency: str
    service_code: str
    credited: int
    charged: int
    held: int
    refunded: int
    available: int
    updated_at: str


class FaqItem(BaseModel):
    key: str
    question: dict[str, str]
    answer: dict[str, str]
    related: list[str]


class Balances(BaseModel):
    beneficiary_id: str
    balances: list[BalanceLine]


def authenticated(secret: str):
    async def principal(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        try:
            return verify_token(secret, credentials.credentials)
        except InvalidToken as error:
            raise HTTPException(401, f"invalid token: {error}",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
    return principal


def require(roles: frozenset[str], secret: str):
    principal_of = authenticated(secret)

    async def check(principal: Annotated[Principal, Depends(principal_of)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(403, f"role {principal.role!r} may not use this endpoint")
        return principal
    return check


def _pii(value: str, principal: Principal) -> str:
    return value if principal.role in FULL_PII_ROLES else (mask(value) or "")


#: The columns of a timeline entry; a notifier entry also brings its message.
TIMELINE_COLUMNS = ("event_id, type, source, origin_source, origin_type, occurred_at, recorded_at, "
                    "CASE WHEN topic = 'ledger.notifications' THEN data END AS message")


def _message(raw: Any) -> MessageView | None:
    if raw is None:
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    reason = data.get("reason") or (f"superseded by {data['superseded_by']}" if data.get("superseded_by") else None)
    return MessageView(key=data["key"], audience=data["audience"], channel=data.get("channel"),
                       address=data.get("address"), language=data.get("language"), subject=data.get("subject"),
                       body=data.get("body"), reason=reason)


def _timeline(rows: list[asyncpg.Record]) -> list[TimelineEntry]:
    return [TimelineEntry(type=r["type"], source=r["origin_source"] or r["source"], origin_type=r["origin_type"],
                          time=local(r["occurred_at"]), recorded_at=local(r["recorded_at"]),
                          event_id=r["event_id"], message=_message(r["message"])) for r in rows]


#: The FastAPI dependency that yields the read model's asyncpg pool.
Pool = Callable[[], Awaitable[asyncpg.Pool]]


def pool_dependency(pool_of: Callable[[], asyncpg.Pool | None]) -> Pool:
    """``pool_of()`` returns the pool once it exists; until then, 503."""
    async def pool() -> asyncpg.Pool:
        current = pool_of()
        if current is None:
            raise HTTPException(503, "the read model is not connected yet")
        return current
    return pool


#: Case kinds: (query of the case row, query of its timeline); fixed SQL, the key bound.
CASE_QUERIES = {
    kind: (f"SELECT * FROM audit.{table} WHERE {column} = $1",  # noqa: S608 - constants only
           f"SELECT {TIMELINE_COLUMNS} "  # noqa: S608
           f"FROM audit.ledger_events WHERE {column} = $1 ORDER BY occurred_at, recorded_at, event_id")
    for kind, table, column in (("payment", "payments", "payment_id"), ("refund", "refunds", "refund_id"))
}


async def case_with_timeline(db: asyncpg.Pool, kind: str, key: str,
                             fields: FieldCipher = CLEAR) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """The case row and its timeline (sealed values opened), or 404."""
    case_sql, timeline_sql = CASE_QUERIES[kind]
    async with db.acquire() as conn:
        row = await conn.fetchrow(case_sql, key)
        if row is None:
            raise HTTPException(404, f"{kind} {key} is not in the ledger")
        return fields.open_row(row), [fields.open_row(e) for e in await conn.fetch(timeline_sql, key)]


def create_router(pool: Pool, secret: str, fields: FieldCipher = CLEAR) -> APIRouter:
    """The payment and balance routes under ``/api/v1``; ``fields`` opens the sealed IBANs."""
    router = APIRouter(prefix="/api/v1", responses=_UNAUTHORIZED)
    reader = require(READ_ROLES, secret)

    @router.get("/payments/{payment_id}", response_model=PaymentCase, tags=["cases"],
                responses={404: {"description": "No such payment"}})
    async def payment_case(
        payment_id: Annotated[str, Path(pattern=ID_PATTERN)],
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> PaymentCase:
        """The payment and everything that followed it, with the full timeline."""
        row, events = await case_with_timeline(db, "payment", payment_id, fields)
        return PaymentCase(
            payment_id=row["payment_id"], beneficiary_id=_pii(row["beneficiary_id"], principal),
            payer_id=_pii(row["payer_id"], principal), payer_iban=_pii(row["payer_iban"], principal),
            third_party_payer=row["third_party_payer"], agency=row["agency"],
            service_code=row["service_code"], amount=row["amount"], currency=row["currency"],
            channel=row["channel"], sadad_bill_number=row["sadad_bill_number"],
            bank=BankView(code=row["bank_code"], name=bank_name(row["payer_iban"])),
            paid_at=local(row["paid_at"]), recorded_at=local(row["recorded_at"]),
            acknowledged_at=local(row["acknowledged_at"]), refund_state=row["refund_state"],
            refunded_at=local(row["refunded_at"]), timeline=_timeline(events),
        )

    @router.get("/faq", response_model=list[FaqItem], tags=["help"])
    async def faq(principal: Annotated[Principal, Depends(reader)]) -> list[FaqItem]:
        """Questions citizens ask and the approved answers (Arabic and English), from the message catalogue."""
        return [FaqItem(key=e.key, question=dict(e.question), answer=dict(e.answer), related=list(e.related))
                for e in Catalogue.load().faq()]

    @router.get("/beneficiaries/{beneficiary_id}/balances", response_model=Balances, tags=["balances"])
    async def beneficiary_balances(
        beneficiary_id: Annotated[str, Path(pattern=PERSON_PATTERN)],
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> Balances:
        """Per agency and service: credited, charged, held, refunded, available (halalas)."""
        async with db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM audit.balances WHERE beneficiary_id = $1 ORDER BY agency, service_code",
                beneficiary_id)
        return Balances(
            beneficiary_id=_pii(beneficiary_id, principal),
            balances=[BalanceLine(agency=r["agency"], service_code=r["service_code"], credited=r["credited"],
                                  charged=r["charged"], held=r["held"], refunded=r["refunded"],
                                  available=r["available"], updated_at=local(r["updated_at"]))
                      for r in rows],
        )

    return router


def create_api(pool_of: Callable[[], asyncpg.Pool | None], secret: str, health_routes,
               routers: Sequence[Callable[[Pool], APIRouter]] = (), fields: FieldCipher = CLEAR) -> FastAPI:
    api = FastAPI(
        title="refund-ledger audit API",
        version="1",
        description="One record of every government payment, visa cancellation and refund, "
                    "for MoF staff and the 19990 contact centre.",
        docs_url="/docs", redoc_url=None,
    )

    @api.exception_handler(Exception)
    async def no_stack_traces(_: Request, error: Exception):  # never leak internals
        log.exception("unhandled error in audit API")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    health_routes(api)
    pool = pool_dependency(pool_of)
    for make_router in routers:  # first: their fixed paths (/payments/unreflected) win over {payment_id}
        api.include_router(make_router(pool), responses=_UNAUTHORIZED)
    api.include_router(create_router(pool, secret, fields))

    @api.get("/", include_in_schema=False)
    async def to_console() -> RedirectResponse:
        return RedirectResponse("/console/")

    api.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
    return api
