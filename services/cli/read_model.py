"""``refund-ledger rebuild-read-model``: drop the audit read model and rebuild it
from the services' event stores (``services.audit.rebuild``).

Every table of the ``audit`` schema is derived data except the access log
(who looked at what: a record of requests, not of ledger events), which is
kept. Stop the audit service first; it resumes from its Kafka position and
skips what the rebuild already projected (idempotent by event id).
"""

from __future__ import annotations

import asyncio
import json

import asyncpg

from services.audit.rebuild import REPLAY_ORDER, RebuildReport, rebuild
from services.kit.settings import Settings

#: Tables of the audit schema that are not derived from the ledger and survive a rebuild.
KEPT_TABLES = frozenset({"access_log"})


async def drop_read_model(pool: asyncpg.Pool) -> list[str]:
    """Drop every derived table of the audit schema; the names dropped."""
    async with pool.acquire() as conn:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'audit' ORDER BY tablename")
            if r["tablename"] not in KEPT_TABLES]
        async with conn.transaction():
            for table in tables:
                await conn.execute(f'DROP TABLE audit."{table}" CASCADE')
    return tables


async def rebuild_read_model(settings: Settings, services=REPLAY_ORDER, drop: bool = True
                             ) -> tuple[list[str], RebuildReport]:
    """Drop (unless ``drop`` is False) and rebuild the read model in ``settings.database_url``."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4, command_timeout=300)
    try:
        dropped = await drop_read_model(pool) if drop else []
        return dropped, await rebuild(settings, pool, services=services)
    finally:
        await pool.close()


def rebuild_command(settings: Settings, *, services: list[str] | None, keep: bool) -> int:
    settings.require("database_url")
    dropped, report = asyncio.run(rebuild_read_model(settings, tuple(services or REPLAY_ORDER), drop=not keep))
    print(json.dumps({"dropped": dropped, "notifications": report.notifications, "published": report.published,
                      "applied": report.applied, "seconds": round(report.seconds, 2),
                      "per_service": report.per_service}, indent=2))
    return 0
