"""Access audit: every audit API request under ``/api/v1`` is recorded (who, when,
which path and filters, how many rows, the answer) in the append-only
``audit.access_log`` before its response leaves; ``admin`` reads it.

Government auditors ask "who looked at this citizen": the path names the case
looked at. If the record cannot be written, the data is not served (503).

A CSV export (``services/audit/export.py``) is streamed, not buffered: it is
recorded when its stream ends, with the number of rows sent. Its last chunk is
held back until that record is written; if it cannot be, the stream is broken
off, so a complete export never leaves unrecorded.
"""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from services.audit.api import Pool, local, require
from services.audit.refunds_api import keyset_page
from services.kit import metrics
from services.kit.auth import InvalidToken, Principal, verify_token
from services.kit.pii import CLEAR, FieldCipher

log = logging.getLogger(__name__)

ADMIN = frozenset({"admin"})
CLOSED_EARLY = 499  # the status recorded for an export the client broke off (rows: as many as had left)
READ_ROLES = ADMIN  # who may read this module's routes
_INSERT = ("INSERT INTO audit.access_log (subject, role, method, path, filters, status, rows) "
           "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, at")


def rows_in(body: Any) -> int:
    """How many records an answer carried: list items, balance lines, or one case."""
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        for name in ("items", "balances"):
            if isinstance(body.get(name), list):
                return len(body[name])
        return 0 if "detail" in body else 1
    return 0


def _caller(request: Request, secret: str) -> Principal | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return verify_token(secret, token.strip())
    except (InvalidToken, ValueError):
        return None


def _looked_at(request: Request, fields: FieldCipher) -> tuple[str, str]:
    """The path and query parameters (JSON) to record; with a key, an IBAN in them is kept as its
    keyed hash (``kh:...``, ``services/kit/pii.py``): the log still tells who looked an account up."""
    return (fields.hide_ibans(request.url.path),
            json.dumps({k: fields.hide_ibans(v) for k, v in request.query_params.items()}))


def add_access_audit(api: FastAPI, pool_of: Callable[[], asyncpg.Pool | None], secret: str,
                     fields: FieldCipher = CLEAR) -> None:
    """Record every ``/api/v1`` request before its response is sent."""

    @api.middleware("http")
    async def record_access(request: Request, call_next):
        if not request.url.path.startswith("/api/v1/"):
            return await call_next(request)
        response = await call_next(request)
        export = getattr(request.state, "export", None)
        if export is not None and response.status_code == 200:
            return await _recorded_stream(pool_of, secret, request, response, export, fields)
        body = b"".join([chunk async for chunk in response.body_iterator])
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        caller = _caller(request, secret)
        pool = pool_of()
        if pool is None and response.status_code < 500:
            return JSONResponse({"detail": "the access log is not connected yet"}, status_code=503)
        if pool is not None:
            try:
                async with pool.acquire() as conn:
                    await conn.execute(
                        _INSERT, caller.subject if caller else None, caller.role if caller else None,
                        request.method, *_looked_at(request, fields),
                        response.status_code, rows_in(parsed) if response.status_code < 300 else 0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("access not recorded")
                if response.status_code < 500:  # data is never served unrecorded
                    return JSONResponse({"detail": "the access log is not available; try again"}, status_code=503)
            else:
                metrics.ACCESS_AUDIT_RECORDS.inc()
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(body, status_code=response.status_code, headers=headers, media_type=response.media_type)


async def _record(pool_of: Callable[[], asyncpg.Pool | None], request: Request, caller: Principal | None, status: int,
                  rows: int, fields: FieldCipher) -> None:
    pool = pool_of()
    if pool is None:
        raise OSError("the access log is not connected")
    async with pool.acquire() as conn:
        await conn.execute(
            _INSERT, caller.subject if caller else None, caller.role if caller else None,
            request.method, *_looked_at(request, fields), status, rows)
    metrics.ACCESS_AUDIT_RECORDS.inc()


async def _recorded_stream(pool_of: Callable[[], asyncpg.Pool | None], secret: str, request: Request,
                           response: Response, export: Any, fields: FieldCipher) -> Response:
    """Pass an export's chunks through as they come; record it (with its rows) before the last one."""
    if pool_of() is None:
        return JSONResponse({"detail": "the access log is not connected yet"}, status_code=503)
    caller = _caller(request, secret)

    async def chunks():
        held: bytes | None = None
        finished = False
        try:
            async for chunk in response.body_iterator:
                if held is not None:
                    yield held
                held = chunk if isinstance(chunk, bytes) else chunk.encode()
            finished = True
        finally:
            if not finished:  # the client went away (or the stream failed): what left is still recorded
                with anyio.CancelScope(shield=True):
                    try:
                        await _record(pool_of, request, caller, CLOSED_EARLY, export.rows, fields)
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        log.exception("a broken-off export was not recorded")
        try:
            await _record(pool_of, request, caller, response.status_code, export.rows, fields)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("export not recorded; its stream is broken off")
            raise
        if held is not None:
            yield held

    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return StreamingResponse(chunks(), status_code=response.status_code, headers=headers)


def _record_id(key: str) -> int:
    """A cursor's record id: digits only."""
    if not key.isdigit():
        raise ValueError("not a record id")
    return int(key)


class AccessRecord(BaseModel):
    id: int
    at: str
    subject: str | None
    role: str | None
    method: str
    path: str
    filters: dict[str, str]
    status: int
    rows: int


class AccessPage(BaseModel):
    items: list[AccessRecord]
    next_cursor: str | None


def create_access_router(pool: Pool, secret: str, fields: FieldCipher = CLEAR) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    admin = require(ADMIN, secret)

    @router.get("/access-log", response_model=AccessPage, tags=["access audit"])
    async def access_log(
        principal: Annotated[Principal, Depends(admin)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        subject: Annotated[str | None, Query(max_length=128)] = None,
        path: Annotated[str | None, Query(max_length=300, description="exact path, e.g. /api/v1/payments/PAY-1")]
        = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> AccessPage:
        """Who looked at what, newest first (role admin)."""
        if path is not None:
            path = fields.hide_ibans(path)  # recorded so (see _looked_at)
        filters = [(fragment, value) for fragment, value in (("subject = ?", subject), ("path = ?", path))
                   if value is not None]
        page, next_cursor = await keyset_page(db, "audit.access_log", ("at", "id"), cursor, limit, filters,
                                              newest_first=True, tiebreak=_record_id)
        return AccessPage(
            items=[AccessRecord(id=r["id"], at=local(r["at"]), subject=r["subject"], role=r["role"],
                                method=r["method"], path=r["path"], filters=json.loads(r["filters"]),
                                status=r["status"], rows=r["rows"]) for r in page],
            next_cursor=next_cursor)

    return router

