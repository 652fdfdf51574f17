"""A batch the audit projection could not apply is retried until it applies, never lost.

An error that escapes the projection's agent lets Faust acknowledge the batch unapplied
(``take_events`` acks its buffer when the agent leaves it), and the worker goes on after it. The
projection used to retry only connection errors (OSError, PostgresConnectionError, InterfaceError);
anything else the server said lost the batch: 57P03 ``the database system is shutting down`` /
``starting up`` (CannotConnectNowError) when a connection is opened during an outage, a lock or
statement timeout, 57P01 outside a transaction. Here a real server answers 55P03 (lock_timeout)
while another session holds the table, and then cuts the backend off (57P01); the batch must wait
and apply, every event of it, and the problem shows on readiness meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from services.audit.service import AuditRuntime
from services.kit.settings import Settings
from tests.conftest import TEST_SECRET, fresh_database
from tests.integration.test_audit_api import Ledger, riyadh

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _connection(url: str):
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def until(probe, what: str, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await probe()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return found


async def test_a_batch_the_server_refuses_is_retried_until_it_applies_never_acknowledged_unapplied(postgres):
    url = fresh_database(postgres)
    async with _connection(url) as admin:   # the projection's connections give up on a lock after 0.3 s
        await admin.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET lock_timeout = '300ms'")
    runtime = AuditRuntime(Settings.from_env({"DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                                              "AUDIT_API_SECRET": TEST_SECRET}))
    await runtime.start()
    blocker = await asyncpg.connect(url)
    try:
        assert runtime.pool is not None
        ledger = Ledger(runtime.pool)
        ledger.payment("PAY-1", riyadh(1, 9, 30))
        ledger.acknowledged("PAY-1", riyadh(1, 9, 40))
        messages = ledger.messages

        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE audit.payments IN ACCESS EXCLUSIVE MODE")
        applying = asyncio.create_task(runtime.apply(messages))

        async def problem(name: str):
            async def reported() -> str | None:
                found = (await runtime.health.report())[1].get("projection")
                return found if found and name in found else None
            return await until(reported, f"the projection to report {name}")

        timed_out = await problem("LockNotAvailableError")
        waiting = await until(lambda: blocker.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid()"), "the projection to wait on the lock again")
        assert await blocker.fetchval("SELECT pg_terminate_backend($1)", waiting)
        cut_off = await problem("InterfaceError")
        assert not applying.done(), "the batch must be retried, not given up"
        await lock.rollback()

        assert await asyncio.wait_for(applying, 60) == len(messages), "every event of the batch applied"
        async with runtime.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT amount, acknowledged_at FROM audit.payments WHERE payment_id = 'PAY-1'")
            events = await conn.fetchval("SELECT count(*) FROM audit.ledger_events")
        assert row is not None and row["amount"] == 30000 and row["acknowledged_at"] == riyadh(1, 9, 40)
        assert events == len(messages)
        assert "projection" not in (await runtime.health.report())[1], "the problem clears once applied"
        print(f"\n[projection outage] batch of {len(messages)} applied after: {timed_out}; {cut_off}")
    finally:
        await blocker.close()
        await runtime.stop()
