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
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.audit.api import Pool, local, require
from services.audit.export import Export
from services.audit.refunds_api import keyset_page
from services.kit import metrics
from services.kit.auth import InvalidToken, Principal, verify_token
from services.kit.pii import CLEAR, FieldCipher

log = logging.getLogger(__name__)

ADMIN = frozenset({"admin"})
CLOSED_EARLY = 499  # the status recorded for an export the client broke off (rows: as many as had left)
READ_ROLES = ADMIN  # who may read this module's routes
_NOT_RECORDED = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)  # how a failed insert fails
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
    api.add_middleware(AccessAudit, pool_of=pool_of, secret=secret, fields=fields)


class ExportNotRecorded(Exception):
    """Raised when a finished export cannot be recorded: its stream is broken off before its last chunk."""


class AccessAudit:
    """The access audit as plain ASGI middleware: a normal answer is held back whole until its record is
    written; an export streams as it comes, only its last chunk held back."""

    def __init__(self, app: ASGIApp, pool_of: Callable[[], asyncpg.Pool | None], secret: str,
                 fields: FieldCipher) -> None:
        self.app = app
        self.pool_of = pool_of
        self.secret = secret
        self.fields = fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if not request.url.path.startswith("/api/v1/"):
            await self.app(scope, receive, send)
            return
        await _Exchange(self, request, send).run()

    async def record(self, pool: asyncpg.Pool | None, request: Request, status: int, rows: int) -> None:
        """Write one access record; raises one of ``_NOT_RECORDED`` when it cannot be written."""
        if pool is None:
            raise OSError("the access log is not connected")
        caller = _caller(request, self.secret)
        async with pool.acquire() as conn:
            await conn.execute(
                _INSERT, caller.subject if caller else None, caller.role if caller else None,
                request.method, *_looked_at(request, self.fields), status, rows)
        metrics.ACCESS_AUDIT_RECORDS.inc()


class _Exchange:
    """One recorded request's answer on its way out (the app's messages pass through ``send``)."""

    def __init__(self, audit: AccessAudit, request: Request, send: Send) -> None:
        self.audit = audit
        self.request = request
        self.send_on = send
        self.start: Message = {}
        self.body: list[bytes] = []       # a normal answer's body, until it is complete
        self.export: Export | None = None  # an export's row count, once its stream has started
        self.held = b""                   # an export's latest chunk: it leaves when the next one comes
        self.finished = False             # an export's stream came to its end
        self.stopped = anyio.CancelScope()  # cancelled once an export is refused: the app stops streaming it

    async def run(self) -> None:
        with self.stopped:
            try:
                await self.audit.app(self.request.scope, self.request.receive, self.send)
            finally:
                if self.export is not None and not self.finished:  # the client went away or the stream failed
                    with anyio.CancelScope(shield=True):
                        try:
                            await self.audit.record(self.audit.pool_of(), self.request, CLOSED_EARLY,
                                                    self.export.rows)
                        except _NOT_RECORDED:
                            log.exception("a broken-off export was not recorded")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._started(message)
        elif message["type"] != "http.response.body":
            await self.send_on(message)  # none is used under /api/v1
        elif self.stopped.cancel_called:
            return  # a refused export's chunks, until the app stops
        elif self.export is not None:
            await self._stream(self.export, message)
        else:
            self.body.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._answer(b"".join(self.body))

    async def _started(self, message: Message) -> None:
        self.start = message
        export = getattr(self.request.state, "export", None)  # set by the route: services/audit/export.py
        if export is None or message["status"] != 200:
            return  # held back with the body
        if self.audit.pool_of() is None:
            await self._refuse("the access log is not connected yet")
            self.stopped.cancel()
            return
        self.export = export
        await self.send_on(message)

    async def _answer(self, body: bytes) -> None:
        """A normal answer, complete: recorded, then sent as it came (its headers, content-length too, hold)."""
        status = self.start["status"]
        pool = self.audit.pool_of()
        if pool is None:
            if status < 500:
                await self._refuse("the access log is not connected yet")
                return
        else:
            try:
                await self.audit.record(pool, self.request, status, _rows_of(body) if status < 300 else 0)
            except _NOT_RECORDED:
                log.exception("access not recorded")
                if status < 500:  # data is never served unrecorded
                    await self._refuse("the access log is not available; try again")
                    return
        await self.send_on(self.start)
        await self.send_on({"type": "http.response.body", "body": body, "more_body": False})

    async def _stream(self, export: Export, message: Message) -> None:
        """Pass an export's chunks on as they come; its last one waits until the export is recorded."""
        chunk = message.get("body", b"")
        if chunk:
            if self.held:
                await self.send_on({"type": "http.response.body", "body": self.held, "more_body": True})
            self.held = chunk
        if message.get("more_body", False):
            return
        self.finished = True
        try:
            await self.audit.record(self.audit.pool_of(), self.request, self.start["status"], export.rows)
        except _NOT_RECORDED as error:
            log.exception("export not recorded; its stream is broken off")
            raise ExportNotRecorded(self.request.url.path) from error
        await self.send_on({"type": "http.response.body", "body": self.held, "more_body": False})

    async def _refuse(self, detail: str) -> None:
        """Answer 503 instead: what the app answered was not recorded, so it is not served."""
        await JSONResponse({"detail": detail}, status_code=503)(self.request.scope, self.request.receive,
                                                                self.send_on)


def _rows_of(body: bytes) -> int:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return rows_in(parsed)


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

