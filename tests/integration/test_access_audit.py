"""Every audit API request is recorded (who, when, which path and filters, how many
rows) in an append-only table that only admin reads; nothing is served unrecorded."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import httpx
import pytest

from services.audit.access import ExportNotRecorded
from services.audit.app import build_api
from services.audit.export import CHUNK_ROWS
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


async def test_before_the_access_log_is_connected_only_errors_and_paths_outside_the_api_are_served(pool):
    async with client(lambda: None) as http:
        faq = await http.get("/api/v1/faq", headers=token("agent", "agent:a"))
        refunds = await http.get("/api/v1/refunds", headers=token("agent", "agent:a"))
        health = await http.get("/healthz")
    assert (faq.status_code, faq.json()) == (503, {"detail": "the access log is not connected yet"})
    assert (refunds.status_code, refunds.json()) == (503, {"detail": "the read model is not connected yet"}), \
        "an error serves no data: it leaves as the API answered it"
    assert health.status_code == 200


async def test_a_recorded_answer_leaves_as_the_api_gave_it_and_paths_outside_the_api_are_not_recorded(pool):
    async with client(lambda: pool) as http:
        faq = await http.get("/api/v1/faq", headers=token("agent", "agent:a"))
        missing = await http.get("/api/v1/payments/PAY-404", headers=token("agent", "agent:a"))
        for path in ("/healthz", "/openapi.json", "/console/"):
            assert (await http.get(path)).status_code == 200
    for answer in (faq, missing):
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(answer.content))
    assert len(faq.json()) > 3 and missing.status_code == 404
    async with pool.acquire() as conn:
        paths = [r["path"] for r in await conn.fetch("SELECT path FROM audit.access_log ORDER BY id")]
    assert paths == ["/api/v1/faq", "/api/v1/payments/PAY-404"]


#: EXPORT_ROWS refund cases for the exports below: two full chunks and a shorter last one.
EXPORT_ROWS = 2 * CHUNK_ROWS + 100
LOAD_REFUNDS = f"""
INSERT INTO audit.refunds (refund_id, beneficiary_id, agency, service_code, amount, iban, bank_code, channel,
                           route, state, route_owner, rules_version, requested_at, deadline)
SELECT 'RF-' || lpad(i::text, 7, '0'), '1' || lpad(i::text, 9, '0'), 'JAWAZAT', 'PASSPORT_ISSUE', 10000 + i,
       'SA0380000000608010167519', '80', 'BANK', 'BANK', 'COMPLETED', 'BANK', '2021-09.1',
       now() - make_interval(secs => i), now() - make_interval(secs => i) + interval '3 days'
FROM generate_series(1, {EXPORT_ROWS}) AS i
"""


@pytest.fixture
async def refunds(pool):
    async with pool.acquire() as conn:
        await conn.execute(LOAD_REFUNDS)
    return pool


async def export(api, headers: dict[str, str], sent: list[dict], on_body=None) -> None:
    """GET /api/v1/refunds.csv over raw ASGI, appending every message the app sends to ``sent``;
    ``on_body(message)`` runs on each body message. The client stays."""
    path = "/api/v1/refunds.csv"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asked = False

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never disconnects
        raise AssertionError("unreachable")

    async def send(message):
        sent.append(message)
        if on_body is not None and message["type"] == "http.response.body":
            await on_body(message)

    await api(scope, receive, send)


def csv_lines(sent: list[dict]) -> int:
    return sum(m.get("body", b"").count(b"\r\n") for m in sent if m["type"] == "http.response.body")


async def connections_back(pool) -> bool:
    for _ in range(100):
        if pool.get_size() == pool.get_idle_size():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_an_export_is_recorded_before_its_last_chunk_and_broken_off_when_it_cannot_be(refunds):
    api = build_api(lambda: refunds, TEST_SECRET, load_rules(), None,
                    lambda app: add_operational_routes(app, Health()))
    whole: list[dict] = []
    await export(api, token("auditor", "mof:a"), whole)
    assert whole[0]["status"] == 200 and csv_lines(whole) == EXPORT_ROWS + 1
    assert whole[-1]["more_body"] is False
    async with refunds.acquire() as conn:
        await conn.execute("ALTER TABLE audit.access_log RENAME TO access_log_away")
    broken: list[dict] = []
    try:
        with pytest.raises(ExportNotRecorded):
            await export(api, token("auditor", "mof:b"), broken)
    finally:
        async with refunds.acquire() as conn:
            await conn.execute("ALTER TABLE audit.access_log_away RENAME TO access_log")
    assert broken[0]["status"] == 200
    assert csv_lines(broken) == 1 + 2 * CHUNK_ROWS, "the last chunk never left"
    async with refunds.acquire() as conn:
        records = await conn.fetch("SELECT subject, status, rows FROM audit.access_log WHERE path = $1 ORDER BY id",
                                   "/api/v1/refunds.csv")
    assert [tuple(r) for r in records] == [("mof:a", 200, EXPORT_ROWS)]
    assert await connections_back(refunds)


async def test_an_export_whose_stream_fails_midway_is_recorded_as_broken_off_with_its_rows(refunds):
    api = build_api(lambda: refunds, TEST_SECRET, load_rules(), None,
                    lambda app: add_operational_routes(app, Health()))

    cut: list[int] = []

    async def cut_the_cursor_off(_message):  # after the first chunk: the export's connection is killed
        if cut:
            return
        async with refunds.acquire() as conn:
            cut.extend(await conn.fetchval(
                "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pg_terminate_backend(pid)"))
            while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = any($1)", cut):
                await asyncio.sleep(0.01)

    sent: list[dict] = []
    with pytest.raises(Exception):  # noqa: B017 - asyncpg's error for a killed connection varies with timing
        await export(api, token("auditor", "mof:cut"), sent, on_body=cut_the_cursor_off)
    assert sent[0]["status"] == 200 and 0 < csv_lines(sent) < EXPORT_ROWS
    async with refunds.acquire() as conn:
        records = await conn.fetch("SELECT status, rows FROM audit.access_log WHERE subject = 'mof:cut'")
    assert [r["status"] for r in records] == [499]
    assert 0 < records[0]["rows"] < EXPORT_ROWS


async def test_an_export_is_not_started_when_the_access_log_goes_away_after_its_query_opened(refunds):
    answers = iter([refunds])  # the route's pool dependency gets the pool; the access audit, none

    api = build_api(lambda: next(answers, None), TEST_SECRET, load_rules(), None,
                    lambda app: add_operational_routes(app, Health()))
    sent: list[dict] = []
    await export(api, token("auditor", "mof:a"), sent)
    assert sent[0]["status"] == 503
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {
        "detail": "the access log is not connected yet"}
    assert await connections_back(refunds), "the export's cursor was closed and its connection given back"
    async with refunds.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit.access_log") == 0
