"""The audit API stays fast on millions of cases: every search key and every list filter is
answered from an index, never a sequential scan of a big table.

One read model per test run is loaded with generate_series straight into its tables (1,000,000
refund cases, 1,000,000 payments, 300,000 visas; indexes built after the load, as a restore
would), then ANALYZEd. The queries checked are the ones the API really sends: the pool's
connections record every query of a request, and each is run again under
``EXPLAIN (FORMAT JSON)`` with the same parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.audit.app import build_api
from services.audit.projections import SCHEMA_SQL, create_schema
from services.kit.auth import issue_token
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from tests.conftest import TEST_SECRET, fresh_database

pytestmark = pytest.mark.integration

REFUNDS, PAYMENTS, VISAS = 1_000_000, 1_000_000, 300_000
BIG_TABLES = {"refunds", "payments", "visas"}
IBAN = "SA0380000000608010167519"

# Deterministic, realistic spreads: most cases closed, a few waiting in each queue, 2% overdue.
LOAD = [
    f"""
    INSERT INTO audit.refunds (refund_id, beneficiary_id, agency, service_code, amount, iban, bank_code, channel,
        route, state, route_owner, rules_version, requested_at, deadline, bank_reference, completed_at,
        overdue, visa_key, payment_id)
    SELECT 'RF-' || i, '1' || lpad((i % 400000)::text, 9, '0'),
           (ARRAY['JAWAZAT','MOI','MUSANED','MOMRAH','MOJ','MOC','NIC','SFDA'])[1 + i % 8], 'SVC', 1000 + i % 90000,
           'SA03800000006080' || lpad((i % 400000)::text, 8, '0'), '80', 'BANK',
           (ARRAY['BANK','BANK','BANK','AUTOMATIC','AUTOMATIC','MOFA','JAWAZAT','MANUAL_REVIEW'])[1 + i % 8],
           CASE WHEN i % 100 = 0 THEN 'JAWAZAT_QUEUE' WHEN i % 100 = 1 THEN 'MANUAL_REVIEW'
                WHEN i % 100 < 10 THEN 'ORDERED' WHEN i % 100 < 15 THEN 'AWAITING_HOLD'
                WHEN i % 100 < 25 THEN 'REJECTED' WHEN i % 100 < 28 THEN 'FAILED' ELSE 'COMPLETED' END,
           'BANK', '2021-09.1', timestamptz '2025-01-01 00:00+03' + make_interval(secs => i * 50),
           timestamptz '2025-01-04 00:00+03' + make_interval(secs => i * 50),
           CASE WHEN i % 100 >= 28 THEN 'BR-' || i END,
           CASE WHEN i % 100 >= 28 THEN timestamptz '2025-01-02 00:00+03' + make_interval(secs => i * 50) END,
           i % 50 = 2, CASE WHEN i % 5 = 3 THEN '1' || lpad((i % 100000)::text, 9, '0') || '/EX' || i || '/1' END,
           'PAY-' || i
    FROM generate_series(1, {REFUNDS}) AS i
    """,
    f"""
    INSERT INTO audit.payments (payment_id, beneficiary_id, payer_id, payer_iban, agency, service_code, amount,
        currency, channel, bank_code, third_party_payer, paid_at, recorded_at, unreflected_since, sadad_bill_number)
    SELECT 'PAY-' || i, '1' || lpad((i % 400000)::text, 9, '0'), '2' || lpad((i % 300000)::text, 9, '0'),
           'SA03800000006080' || lpad((i % 400000)::text, 8, '0'), 'JAWAZAT', 'SVC', 1000 + i % 90000, 'SAR',
           'SADAD_ONLINE', '80', true, timestamptz '2025-01-01 00:00+03' + make_interval(secs => i * 50),
           timestamptz '2025-01-01 00:00+03' + make_interval(secs => i * 50),
           CASE WHEN i % 300 = 0 THEN timestamptz '2025-01-02 00:00+03' + make_interval(secs => i * 50) END,
           '77' || lpad(i::text, 12, '0')
    FROM generate_series(1, {PAYMENTS}) AS i
    """,
    f"""
    INSERT INTO audit.visas (visa_key, sponsor_id, export_number, serial_number, visa_type, payment_id, fee,
        issued_at, route, status, status_mismatch_at)
    SELECT '1' || lpad((i % 100000)::text, 9, '0') || '/EX' || i || '/1', '1' || lpad((i % 100000)::text, 9, '0'),
           'EX' || i, '1', 'WORK', 'PAY-' || i, 200000,
           timestamptz '2025-01-01 00:00+03' + make_interval(secs => i * 50),
           'AUTOMATIC', 'ISSUED', CASE WHEN i % 500 = 0 THEN timestamptz '2025-02-01 00:00+03' END
    FROM generate_series(1, {VISAS}) AS i
    """,
]


class Recording(asyncpg.Connection):
    """A connection that remembers the queries the API sends (for EXPLAIN)."""

    log: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query, *args, **kwargs):
        Recording.log.append((query, args))
        return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query, *args, **kwargs):
        Recording.log.append((query, args))
        return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query, *args, **kwargs):
        Recording.log.append((query, args))
        return await super().fetchval(query, *args, **kwargs)


@pytest.fixture(scope="module")
async def big(postgres):
    """One read model with a million cases, shared by every test here."""
    url = fresh_database(postgres)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4, connection_class=Recording, command_timeout=300)
    try:
        await create_schema(pool)
        async with pool.acquire() as conn:
            indexes = await conn.fetch(
                "SELECT i.indexrelid::regclass::text AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'audit' AND c.relname = ANY($1::text[]) AND NOT i.indisprimary",
                sorted(BIG_TABLES))
            for index in indexes:  # bulk load first, then build the schema's own indexes once
                await conn.execute(f"DROP INDEX {index['name']}")
            await conn.execute("SET maintenance_work_mem = '256MB'")
            for sql in LOAD:
                await conn.execute(sql)
            await conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))  # CREATE INDEX IF NOT EXISTS: rebuilt
            await conn.execute("ANALYZE audit.refunds; ANALYZE audit.payments; ANALYZE audit.visas")
            rebuilt = await conn.fetchval(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'audit' AND c.relname = ANY($1::text[]) AND NOT i.indisprimary", sorted(BIG_TABLES))
            assert rebuilt == len(indexes)
        yield pool
    finally:
        await pool.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def plans_of(pool: asyncpg.Pool, path: str, params: dict[str, str] | None = None) -> list[tuple[str, list]]:
    """Call the API; return each query it sent on a big table with its plan's nodes."""
    api = build_api(lambda: pool, TEST_SECRET, load_rules(), None, lambda app: add_operational_routes(app, Health()))
    headers = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'admin', 'mof:explain', 600)}"}
    Recording.log.clear()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://audit.test") as http:
        response = await http.get(path, params=params or {}, headers=headers)
    assert response.status_code == 200, response.text
    sent = [(q, a) for q, a in Recording.log if any(f"audit.{t}" in q for t in BIG_TABLES)]
    assert sent, f"{path} sent no query on a big table"
    result = []
    async with pool.acquire() as conn:
        for query, args in sent:
            raw = await asyncpg.Connection.fetchval(conn, "EXPLAIN (FORMAT JSON) " + query, *args)
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            result.append((query, list(nodes(plan))))
    return result


def assert_indexed(plans: list[tuple[str, list]]) -> None:
    for query, plan in plans:
        scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in plan
                 if "Relation Name" in n or "Index Name" in n]
        big = [s for s in scans if s[1] in BIG_TABLES or s[0] == "Bitmap Index Scan"]
        assert big, (query, scans)
        assert not [s for s in big if s[0] == "Seq Scan"], f"sequential scan: {query} -> {scans}"


SEARCHES = {
    "national ID / iqama": "1000012345",
    "payer ID": "2000012345",
    "IBAN": "SA03 8000 0000 6080 0001 2345",
    "payment ID": "PAY-777777",
    "refund ID": "RF-777777",
    "bank reference": "BR-777777",
    "SADAD bill number": "77000000777777",
    "visa (sponsor export serial)": "1000077777 EX277777 1",
}


@pytest.mark.parametrize("key", SEARCHES)
async def test_every_search_key_is_answered_from_an_index(key, big):
    assert_indexed(await plans_of(big, "/api/v1/search", {"q": SEARCHES[key]}))


LISTS = {
    "refunds, newest first": ("/api/v1/refunds", {}),
    "status=overdue": ("/api/v1/refunds", {"status": "overdue"}),
    "status=open": ("/api/v1/refunds", {"status": "open"}),
    "status=JAWAZAT_QUEUE": ("/api/v1/refunds", {"status": "JAWAZAT_QUEUE"}),
    "status=FAILED": ("/api/v1/refunds", {"status": "FAILED"}),
    "route=MOFA": ("/api/v1/refunds", {"route": "MOFA"}),
    "route=JAWAZAT&status=ORDERED": ("/api/v1/refunds", {"route": "JAWAZAT", "status": "ORDERED"}),
    "agency=MOJ": ("/api/v1/refunds", {"agency": "MOJ"}),
    "date range": ("/api/v1/refunds", {"from": "2025-06-01T00:00:00+03:00", "to": "2025-06-08T00:00:00+03:00"}),
    "agency and date range": ("/api/v1/refunds", {"agency": "MOJ", "from": "2025-06-01T00:00:00+03:00",
                                                  "to": "2025-06-08T00:00:00+03:00"}),
    "Jawazat queue": ("/api/v1/jawazat/queue", {}),
    "MoFA review queue": ("/api/v1/reviews/queue", {}),
    "unreflected payments": ("/api/v1/payments/unreflected", {}),
    "status mismatches": ("/api/v1/visas/status-mismatches", {}),
    "a refund case": ("/api/v1/refunds/RF-777777", {}),
    "a payment case": ("/api/v1/payments/PAY-777777", {}),
    "a visa case": ("/api/v1/visas/1000077777/EX277777/1", {}),
}


@pytest.mark.parametrize("name", LISTS)
async def test_every_list_filter_and_case_page_is_answered_from_an_index(name, big):
    path, params = LISTS[name]
    assert_indexed(await plans_of(big, path, params))


async def test_the_next_page_is_answered_from_an_index_too(big):
    api = build_api(lambda: big, TEST_SECRET, load_rules(), None, lambda app: add_operational_routes(app, Health()))
    headers = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'admin', 'mof:explain', 600)}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://audit.test") as http:
        first = (await http.get("/api/v1/refunds", params={"route": "MOFA", "limit": 5}, headers=headers)).json()
    assert first["next_cursor"]
    assert_indexed(await plans_of(big, "/api/v1/refunds", {"route": "MOFA", "limit": "5",
                                                            "cursor": first["next_cursor"]}))


async def test_the_check_fails_when_an_index_is_missing(big):
    """The guard itself: without its index, the SADAD bill number search is a sequential scan, and caught."""
    [(query, args)] = [(q, a) for q, a in await _sent(big, SEARCHES["SADAD bill number"]) if "sadad_bill_number" in q]
    async with big.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("DROP INDEX audit.payments_sadad_bill")
            raw = await asyncpg.Connection.fetchval(conn, "EXPLAIN (FORMAT JSON) " + query, *args)
        finally:
            await transaction.rollback()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    with pytest.raises(AssertionError, match="sequential scan"):
        assert_indexed([(query, list(nodes(plan)))])


async def _sent(pool: asyncpg.Pool, q: str) -> list[tuple[str, tuple[Any, ...]]]:
    await plans_of(pool, "/api/v1/search", {"q": q})
    return list(Recording.log)
