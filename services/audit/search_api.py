"""``GET /api/v1/search?q=``: one box for every key a citizen can read out over the phone:
national ID / iqama, payment ID, SADAD bill number, refund ID, bank reference, IBAN (exact), and a visa as
sponsor + export number + serial number. Exact matches only, on indexed columns."""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().

import re
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services.audit.api import READ_ROLES, Pool, _pii, require
from services.audit.export import CSV_RESPONSE, rows_csv
from services.kit.auth import Principal
from services.kit.pii import CLEAR, FieldCipher

PERSON = re.compile(r"^[12][0-9]{9}$")
IBAN = re.compile(r"^SA[0-9]{2}[0-9A-Z]{20}$")
VISA = re.compile(r"^([12][0-9]{9})[\s/-]+([A-Za-z0-9][A-Za-z0-9._:-]{0,63})[\s/-]+([A-Za-z0-9][A-Za-z0-9-]{0,31})$")
PER_KIND = 20  # results per kind of case


class Hit(BaseModel):
    kind: Literal["beneficiary", "payment", "refund", "visa"]
    key: str
    label: str
    url: str


class SearchResult(BaseModel):
    query_kind: str
    items: list[Hit]


async def _payments(conn: asyncpg.Connection, where: str, value: str) -> list[Hit]:
    rows = await conn.fetch(f"SELECT payment_id, agency, service_code, amount, refund_state FROM audit.payments "  # noqa: S608 - where is a constant
                            f"WHERE {where} = $1 ORDER BY paid_at DESC LIMIT {PER_KIND}", value)
    return [Hit(kind="payment", key=r["payment_id"], url=f"/api/v1/payments/{r['payment_id']}",
                label=f"{r['agency']} {r['service_code']} {r['amount'] / 100:.2f} SAR ({r['refund_state']})")
            for r in rows]


async def _refunds(conn: asyncpg.Connection, where: str, value: str) -> list[Hit]:
    rows = await conn.fetch(f"SELECT refund_id, route, state, amount FROM audit.refunds "  # noqa: S608 - where is a constant
                            f"WHERE {where} = $1 ORDER BY requested_at DESC LIMIT {PER_KIND}", value)
    return [Hit(kind="refund", key=r["refund_id"], url=f"/api/v1/refunds/{r['refund_id']}",
                label=f"{r['route']} {r['state']} {r['amount'] / 100:.2f} SAR") for r in rows]


async def _visas(conn: asyncpg.Connection, where: str, value: str, principal: Principal) -> list[Hit]:
    rows = await conn.fetch(f"SELECT sponsor_id, export_number, serial_number, visa_type, route FROM audit.visas "  # noqa: S608 - where is a constant
                            f"WHERE {where} = $1 ORDER BY issued_at DESC NULLS LAST LIMIT {PER_KIND}", value)
    return [Hit(kind="visa", key=f"{_pii(r['sponsor_id'], principal)}/{r['export_number']}/{r['serial_number']}",
                url=f"/api/v1/visas/{r['sponsor_id']}/{r['export_number']}/{r['serial_number']}",
                label=f"{r['visa_type'] or 'VISA'} {r['route'] or 'ISSUED'}") for r in rows]


def create_search_router(pool: Pool, secret: str, fields: FieldCipher = CLEAR) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    reader = require(READ_ROLES, secret)

    @router.get("/search", response_model=SearchResult, tags=["search"])
    async def search(
        q: Annotated[str, Query(min_length=3, max_length=80, description="Any key a citizen can read out")],
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> SearchResult:
        """Cases matching the key exactly: a person's payments, refunds and visas; a payment, refund,
        bank reference, IBAN, SADAD bill number, or visa (sponsor export serial)."""
        return await find(q, principal, db)

    @router.get("/search.csv", tags=["search", "export"], response_class=StreamingResponse,
                responses=CSV_RESPONSE)
    async def export_search(
        request: Request,
        q: Annotated[str, Query(min_length=3, max_length=80, description="Any key a citizen can read out")],
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
    ) -> StreamingResponse:
        """The hits of `GET /search` as CSV (kind, key, label, url); recorded in the access log with its rows."""
        result = await find(q, principal, db)
        return rows_csv(request, ("kind", "key", "label", "url"),
                        [(h.kind, h.key, h.label, h.url) for h in result.items], "search.csv")

    async def find(q: str, principal: Principal, db: asyncpg.Pool) -> SearchResult:
        text = " ".join(q.split())
        compact = text.replace(" ", "").upper()
        items: list[Hit] = []
        async with db.acquire() as conn:
            if visa := VISA.match(text):
                sponsor, export, serial = visa.groups()
                kind = "visa"
                items += await _visas(conn, "visa_key", f"{sponsor}/{export}/{serial}", principal)
            elif PERSON.match(text):
                kind = "person"
                items += await _payments(conn, "sadad_bill_number", text)  # a 10-digit bill number looks the same
                items.append(Hit(kind="beneficiary", key=_pii(text, principal), label="balances",
                                 url=f"/api/v1/beneficiaries/{text}/balances"))
                items += await _payments(conn, "beneficiary_id", text)
                items += [h for h in await _payments(conn, "payer_id", text) if h not in items]
                items += await _refunds(conn, "beneficiary_id", text)
                items += await _visas(conn, "sponsor_id", text, principal)
            elif IBAN.match(compact):
                kind = "iban"
                if fields.keyed:  # the IBAN columns hold ciphertext: compare the keyed hashes (indexed)
                    items += await _payments(conn, "payer_iban_hash", fields.lookup(compact))
                    items += await _refunds(conn, "iban_hash", fields.lookup(compact))
                else:
                    items += await _payments(conn, "payer_iban", compact)
                    items += await _refunds(conn, "iban", compact)
            else:
                kind = "reference"
                items += await _payments(conn, "payment_id", text)
                if text.isdigit():
                    items += [h for h in await _payments(conn, "sadad_bill_number", text) if h not in items]
                items += await _refunds(conn, "refund_id", text)
                items += [h for h in await _refunds(conn, "bank_reference", text) if h not in items]
        return SearchResult(query_kind=kind, items=items)

    return router
