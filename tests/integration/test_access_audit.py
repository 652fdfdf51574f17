"""Every audit API request is recorded (who, when, which path and filters, how many
rows) in an append-only table that only admin reads; nothing is served unrecorded."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from services.audit.app import build_api
from services.audit.projections import create_schema
from services.kit.auth import issue_token
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.integration


def token(role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, role, subject, 600)}"}


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await create_schema(pool)
    try:
        yield pool
    finally:
        await pool.close()


def client(pool_of) -> httpx.AsyncClient:
    api = build_api(pool_of, TEST_SECRET, load_rules(), None, lambda app: add_operational_routes(app, Health()))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api, raise_app_exceptions=False),
                             base_url="http://audit.test")


async def test_every_query_is_recorded_with_who_what_filters_and_rows(pool):
    async with client(lambda: pool) as http:
        assert (await http.get("/api/v1/refunds", params={"status": "overdue", "limit": 5},
                               headers=token("agent", "agent:n.alotaibi"))).status_code == 200
        missing = await http.get("/api/v1/payments/PAY-404", headers=token("auditor", "mof:s.alharbi"))
        assert missing.status_code == 404
        assert (await http.get("/api/v1/faq", headers=token("agent", "agent:n.alotaibi"))).status_code == 200
        assert (await http.get("/api/v1/refunds")).status_code == 401
        page = (await http.get("/api/v1/access-log", headers=token("admin", "mof:admin"))).json()
        again = (await http.get("/api/v1/access-log", params={"limit": 1}, headers=token("admin", "mof:admin"))).json()
    records = [(r["subject"], r["role"], r["method"], r["path"], r["filters"], r["status"]) for r in page["items"]]
    assert records == [
        (None, None, "GET", "/api/v1/refunds", {}, 401),
        ("agent:n.alotaibi", "agent", "GET", "/api/v1/faq", {}, 200),
        ("mof:s.alharbi", "auditor", "GET", "/api/v1/payments/PAY-404", {}, 404),
        ("agent:n.alotaibi", "agent", "GET", "/api/v1/refunds", {"status": "overdue", "limit": "5"}, 200),
    ], "newest first"
    assert [(r["subject"], r["path"], r["rows"]) for r in again["items"]] == [
        ("mof:admin", "/api/v1/access-log", 4)], "reading the log is itself recorded, with the rows it returned"
    assert page["items"][1]["rows"] > 3 and page["items"][2]["rows"] == 0


async def test_only_admin_reads_the_access_log_and_it_can_be_filtered_by_subject(pool):
    async with client(lambda: pool) as http:
        await http.get("/api/v1/faq", headers=token("agent", "agent:a"))
        await http.get("/api/v1/faq", headers=token("agent", "agent:b"))
        assert (await http.get("/api/v1/access-log", headers=token("auditor", "mof:x"))).status_code == 403
        page = (await http.get("/api/v1/access-log", params={"subject": "agent:b"},
                               headers=token("admin", "mof:admin"))).json()
    assert [r["subject"] for r in page["items"]] == ["agent:b"]


async def test_the_access_log_cannot_be_changed_or_deleted(pool):
    async with client(lambda: pool) as http:
        await http.get("/api/v1/faq", headers=token("agent", "agent:a"))
    async with pool.acquire() as conn:
        for statement in ("UPDATE audit.access_log SET subject = 'someone else'", "DELETE FROM audit.access_log",
                          "TRUNCATE audit.access_log"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM audit.access_log WHERE subject = 'agent:a'") == 1


async def test_nothing_is_served_when_the_access_cannot_be_recorded(pool, database_url):
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE audit.access_log RENAME TO access_log_away")
    try:
        async with client(lambda: pool) as http:
            response = await http.get("/api/v1/faq", headers=token("agent", "agent:a"))
        assert response.status_code == 503 and "access log" in response.json()["detail"]
    finally:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE audit.access_log_away RENAME TO access_log")
