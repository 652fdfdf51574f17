"""CSV export of the audit lists, streamed: rows come from an asyncpg server-side
cursor and leave in chunks, so an export of millions of cases holds one chunk
in memory, never the result.

The access audit records an export when its stream ends, with the number of
rows sent (``Export.rows``); see ``services/audit/access.py``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
from fastapi import Request
from fastapi.responses import StreamingResponse

CHUNK_ROWS = 500          # rows fetched from the server-side cursor and sent per chunk
MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_RESPONSE = {200: {"description": "The rows as CSV (UTF-8, header line first), streamed.",
                      "content": {"text/csv": {"schema": {"type": "string"}}}}}


@dataclass
class Export:
    """What the access audit needs of a running export: how many rows have left so far."""

    rows: int = 0


def _line(values: Sequence[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(["" if v is None else _safe(v) for v in values])
    return out.getvalue()


def _safe(value: Any) -> Any:
    """Spreadsheets run a cell starting with = + - @ as a formula: such text gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _CursorResponse(StreamingResponse):
    """A streamed answer that gives its database connection back however it ends: finished, failed,
    or cancelled because the client went away (then the body's generator is abandoned unclosed)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()


async def stream_csv(request: Request, pool: asyncpg.Pool, sql: str, args: Sequence[Any], header: Sequence[str],
                     values: Callable[[asyncpg.Record], Sequence[Any]], filename: str) -> StreamingResponse:
    """Stream ``sql`` (a constant of this package; values bound) as CSV, counting rows in
    ``request.state.export`` for the access audit.

    The cursor is opened before the answer starts, so a database that fails answers 500, not a
    truncated 200; the connection goes back to the pool when the stream ends or is dropped.
    """
    conn = await pool.acquire()
    transaction = conn.transaction(isolation="repeatable_read", readonly=True)
    released = False

    async def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        try:
            await transaction.rollback()  # read-only: nothing to keep
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass  # broken off mid-fetch: the pool resets (or closes) the connection on release
        finally:
            await pool.release(conn)

    try:
        await transaction.start()
        cursor = await conn.cursor(sql, *args)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await release()
        raise
    export = Export()
    request.state.export = export

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield _line(header).encode()
            while rows := await cursor.fetch(CHUNK_ROWS):
                export.rows += len(rows)
                yield "".join(_line(values(row)) for row in rows).encode()
        finally:
            with anyio.CancelScope(shield=True):
                await release()

    return _CursorResponse(chunks(), release, media_type=MEDIA_TYPE,
                           headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                    "Cache-Control": "no-store"})


def rows_csv(request: Request, header: Sequence[str], rows: Sequence[Sequence[Any]],
             filename: str) -> StreamingResponse:
    """A small, already bounded result (e.g. search hits) as CSV through the same path."""
    export = Export()
    request.state.export = export

    async def chunks() -> AsyncIterator[bytes]:
        yield _line(header).encode()
        for row in rows:
            export.rows += 1
            yield _line(row).encode()

    return StreamingResponse(chunks(), media_type=MEDIA_TYPE,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Cache-Control": "no-store"})
