"""CSV export of the audit lists: streamed from a server-side cursor (memory does not grow with
the rows), masked per role, and recorded in the access log with the rows it sent.

The read model is loaded with generate_series straight into its tables (100k refund cases
in about a second); the API is the one ``build_api`` composes, driven over raw ASGI so
that the test itself never holds the body either.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tracemalloc
from datetime import datetime, timedelta, timezone

import asyncpg
import httpx
import pytest

from services.audit.app import build_api
from services.audit.projections import create_schema
from services.kit.auth import issue_token
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from tests.conftest import TEST_SECRET, fresh_database

pytestmark = pytest.mark.integration

SMALL, LARGE = 10_000, 100_000
IBAN = "SA0380000000608010167519"
NOW = datetime(2026, 11, 9, 9, tzinfo=timezone.utc)

#: LARGE refund cases: the first SMALL are Jawazat's, the rest Musaned's; ids RF-0000001...
LOAD_REFUNDS = f"""
INSERT INTO audit.refunds (refund_id, beneficiary_id, agency, service_code, amount, iban, bank_code, channel,
                           route, state, route_owner, rules_version, requested_at, deadline)
SELECT 'RF-' || lpad(i::text, 7, '0'), '1' || lpad(i::text, 9, '0'),
       CASE WHEN i <= {SMALL} THEN 'JAWAZAT' ELSE 'MUSANED' END, 'PASSPORT_ISSUE', 10000 + i, $1, '80', 'BANK',
       'BANK', 'COMPLETED', 'BANK', '2021-09.1',
       $2::timestamptz - make_interval(secs => i), $2::timestamptz - make_interval(secs => i) + interval '3 days'
FROM generate_series(1, {LARGE}) AS i
"""


def token(role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, role, subject, 600)}"}


def compose(pool_of):
    return build_api(pool_of, TEST_SECRET, load_rules(), None, lambda app: add_operational_routes(app, Health()),
                     lambda: NOW)


@pytest.fixture(scope="module")
async def loaded(postgres):
    pool = await asyncpg.create_pool(fresh_database(postgres), min_size=1, max_size=4)
    try:
        await create_schema(pool)
        async with pool.acquire() as conn:
            await conn.execute(LOAD_REFUNDS, IBAN, NOW)
        yield pool
    finally:
        await pool.close()


async def stream(api, path: str, query: str, headers: dict[str, str],
                 leave_after: int | None = None) -> tuple[int, int, int, bytes]:
    """GET over raw ASGI; the body is counted and dropped chunk by chunk. Returns the status,
    the lines and bytes received, and the first chunk. ``leave_after``: the client disconnects
    after that many body chunks."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    answer = {"status": 0, "lines": 0, "bytes": 0, "first": b"", "chunks": 0}
    sent = False
    gone = asyncio.Event()

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()  # without leave_after, the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            if gone.is_set():
                return  # nobody is listening any more (as a server drops writes to a closed socket)
            answer["chunks"] += 1
            if leave_after is not None and answer["chunks"] >= leave_after:
                gone.set()
            body = message.get("body", b"")
            if body and not answer["first"]:
                answer["first"] = body
            answer["lines"] += body.count(b"\r\n")
            answer["bytes"] += len(body)

    await api(scope, receive, send)
    return answer["status"], answer["lines"], answer["bytes"], answer["first"]


async def test_an_export_of_100k_rows_streams_in_memory_that_does_not_grow_with_the_rows(loaded):
    api = compose(lambda: loaded)
    auditor = token("auditor", "mof:auditor.one")
    await stream(api, "/api/v1/refunds.csv", "agency=JAWAZAT&status=COMPLETED", auditor)  # warm-up: imports, caches
    peaks = {}
    tracemalloc.start()
    try:
        for rows, query in ((SMALL, "agency=JAWAZAT"), (LARGE, "")):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            status, lines, size, first = await stream(api, "/api/v1/refunds.csv", query, auditor)
            peaks[rows] = tracemalloc.get_traced_memory()[1] - base
            assert (status, lines) == (200, rows + 1), "header line plus one line per case"
            assert first.startswith(b"refund_id,beneficiary_id,agency,")
            assert size > rows * 100
    finally:
        tracemalloc.stop()
    print(f"export peak memory: {SMALL} rows {peaks[SMALL] / 1e6:.2f} MB, {LARGE} rows {peaks[LARGE] / 1e6:.2f} MB")
    # Held in memory, 10x the rows would need ~10x the memory (100k rows are ~20 MB of CSV).
    assert peaks[LARGE] < 2 * peaks[SMALL], peaks
    assert peaks[LARGE] < 8_000_000, peaks

    async with loaded.acquire() as conn:
        records = await conn.fetch("SELECT subject, role, path, filters, status, rows FROM audit.access_log "
                                   "WHERE path = '/api/v1/refunds.csv' ORDER BY id")
    assert [(r["subject"], r["role"], r["path"], json.loads(r["filters"]), r["status"], r["rows"])
            for r in records][-2:] == [
        ("mof:auditor.one", "auditor", "/api/v1/refunds.csv", {"agency": "JAWAZAT"}, 200, SMALL),
        ("mof:auditor.one", "auditor", "/api/v1/refunds.csv", {}, 200, LARGE),
    ]


def parse(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


async def test_an_export_masks_ids_and_ibans_for_roles_without_pii_rights(loaded):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=compose(lambda: loaded)),
                                 base_url="http://audit.test") as http:
        window = {"from": (NOW - timedelta(seconds=2.5)).isoformat(), "to": NOW.isoformat()}
        agent = await http.get("/api/v1/refunds.csv", params=window, headers=token("agent", "agent:n.alotaibi"))
        auditor = await http.get("/api/v1/refunds.csv", params=window, headers=token("auditor", "mof:a"))
        refused = await http.get("/api/v1/refunds.csv", params=window)
    assert agent.headers["content-type"].startswith("text/csv")
    assert "attachment" in agent.headers["content-disposition"]
    seen = [(r["refund_id"], r["beneficiary_id"], r["iban"], r["amount_halalas"]) for r in parse(agent.text)]
    assert seen == [("RF-0000001", "******0001", "*" * 20 + IBAN[-4:], "10001"),
                    ("RF-0000002", "******0002", "*" * 20 + IBAN[-4:], "10002")], "newest first, masked"
    assert [(r["beneficiary_id"], r["iban"]) for r in parse(auditor.text)] == [("1000000001", IBAN),
                                                                                ("1000000002", IBAN)]
    assert refused.status_code == 401


async def test_an_export_is_not_served_without_the_access_log(loaded):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=compose(lambda: None)),
                                 base_url="http://audit.test") as http:
        response = await http.get("/api/v1/refunds.csv", headers=token("auditor", "mof:a"))
    assert response.status_code == 503 and "refund_id" not in response.text


async def test_the_exception_lists_export_as_csv_too_and_are_recorded_with_their_rows(loaded):
    async with loaded.acquire() as conn:
        await conn.execute(
            "INSERT INTO audit.payments (payment_id, beneficiary_id, payer_id, payer_iban, agency, service_code, "
            "amount, currency, channel, bank_code, third_party_payer, paid_at, recorded_at, unreflected_since) "
            "SELECT 'PAY-U' || i, '2000000007', '2000000007', $1, 'MOI', 'TRAFFIC_FINE', 15000, 'SAR', 'SADAD_ONLINE',"
            " '80', false, $2::timestamptz - make_interval(days => i), $2::timestamptz, "
            " $2::timestamptz - make_interval(days => i) + interval '24 hours' FROM generate_series(1, 3) AS i",
            IBAN, NOW)
        await conn.execute(
            "INSERT INTO audit.visas (visa_key, sponsor_id, export_number, serial_number, status, status_changed_at, "
            "status_mismatch_at) VALUES ('1098765439/1448001234/7', '1098765439', '1448001234', '7', 'FEES_RESTORED', "
            "$1, $1)", NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=compose(lambda: loaded)),
                                 base_url="http://audit.test") as http:
        agent = token("agent", "agent:n.alotaibi")
        unreflected = await http.get("/api/v1/payments/unreflected.csv", params={"agency": "MOI"}, headers=agent)
        mismatches = await http.get("/api/v1/visas/status-mismatches.csv", headers=agent)
    assert [(r["payment_id"], r["beneficiary_id"], r["responsible_agency"]) for r in parse(unreflected.text)] == [
        ("PAY-U3", "******0007", "MOI"), ("PAY-U2", "******0007", "MOI"), ("PAY-U1", "******0007", "MOI")], \
        "oldest first, masked"
    assert [(r["sponsor_id"], r["serial_number"]) for r in parse(mismatches.text)] == [("******5439", "7")]
    async with loaded.acquire() as conn:
        rows = await conn.fetch("SELECT path, rows FROM audit.access_log WHERE path LIKE '%.csv' "
                                "AND subject = 'agent:n.alotaibi' AND path NOT LIKE '/api/v1/refunds%' ORDER BY id")
    assert [(r["path"], r["rows"]) for r in rows] == [("/api/v1/payments/unreflected.csv", 3),
                                                      ("/api/v1/visas/status-mismatches.csv", 1)]


async def test_an_export_the_client_breaks_off_is_still_recorded_and_gives_its_connection_back(loaded):
    api = compose(lambda: loaded)
    status, lines, _, _ = await stream(api, "/api/v1/refunds.csv", "", token("auditor", "mof:quitter"),
                                       leave_after=5)
    assert status == 200 and 0 < lines < LARGE
    async with loaded.acquire() as conn:
        records = await conn.fetch("SELECT status, rows FROM audit.access_log WHERE subject = 'mof:quitter'")
    assert [r["status"] for r in records] == [499], "recorded as broken off by the client"
    assert 0 < records[0]["rows"] < LARGE
    for _ in range(100):  # the cursor's connection is back in the pool
        if loaded.get_size() == loaded.get_idle_size():
            break
        await asyncio.sleep(0.05)
    assert loaded.get_size() == loaded.get_idle_size()
