"""Personal data at rest in the audit read model: with CIPHER_KEY set, a pg_dump of the whole
database after the ledger events of real journeys and some API use (an IBAN search among them)
holds no IBAN that was sent, while every audit API answer is the same as from a read model kept
in clear: full IBANs to the roles that may see them, masked for the others, and the exact IBAN
search still finds the cases, from an index. The same dump of the clear read model shows every
one of them (the check can fail)."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta

import asyncpg
import pytest
from eventsourcing.cipher import AESCipher

from services.audit.app import build_api
from services.audit.projections import Projection
from services.kit import envelope
from services.kit.auth import ROLES
from services.kit.embedded import postgres_bin_dir
from services.kit.envelope import RawMessage
from services.kit.pii import CLEAR, FieldCipher
from services.kit.web import Health, add_operational_routes
from tests.conftest import TEST_SECRET, fresh_database
from tests.factories import IBAN_BAD_CHECKSUM, IBAN_OTHER, IBAN_OWN
from tests.integration.test_audit_api import (
    ENDPOINTS,
    NOW,
    PAYER,
    QUERY_VALUES,
    RULES,
    VISA_AUTO,
    Ledger,
    as_role,
    client_for,
    masked,
    read_model,
    riyadh,
    schemas,
)
from tests.integration.test_audit_explain import Recording, nodes

pytestmark = pytest.mark.integration

IBAN_REJECTED = IBAN_BAD_CHECKSUM  # only ever in a rejected message (its reason and its raw value)
IBAN_UNREADABLE = "SA4420000001234567890001"  # only in a ledger message the projection cannot read
SENT = (IBAN_OWN, IBAN_OTHER, IBAN_REJECTED, IBAN_UNREADABLE)
SEARCHES = (IBAN_OWN, "sa44 2000 0001 2345 6789 1234")  # IBAN_OTHER as a caller reads it out


def ledger_messages(pool: asyncpg.Pool) -> list[RawMessage]:
    """The journeys of the masking test (a third party paid, a bank refund ordered, one waiting for
    Jawazat, a visa whose fees were restored) and more: a completed refund, one refused, a visa fee
    refund; a payment the payments service rejected (invalid IBAN; its raw message travels with the
    rejection) and a ledger message the projection cannot read."""
    ledger = Ledger(pool)
    ledger.payment("PAY-1", riyadh(1, 9, 30), payer=PAYER, iban=IBAN_OTHER)
    ledger.unreflected("PAY-1")
    ledger.refund_requested("RR-1", riyadh(2, 10))
    ledger.ordered("RR-1", riyadh(2, 10, 0, 1))
    ledger.refund_requested("AB-1", riyadh(3, 11), route="JAWAZAT", iban=IBAN_OTHER)
    ledger.visa_status("3", "FEES_RESTORED", riyadh(3, 14, 20))
    ledger.status_mismatch("3", riyadh(3, 14, 20), riyadh(19, 0, 0, 3))
    ledger.payment("PAY-2", riyadh(2, 8))
    ledger.refund_requested("RR-DONE", riyadh(2, 11))
    ledger.ordered("RR-DONE", riyadh(2, 11, 0, 1))
    ledger.completed("RR-DONE", riyadh(3, 13))
    ledger.refund_requested("RR-REFUSED", riyadh(4, 10), iban=IBAN_OTHER)
    ledger.rejected("RR-REFUSED", riyadh(4, 10, 0, 1))
    ledger.visa_refund("1", "AUTOMATIC", riyadh(5, 9), riyadh(5, 12))
    raw = json.dumps({"specversion": "1.0", "id": "bank-77", "source": "bank/80", "type": "payment.recorded",
                      "time": riyadh(6, 9).isoformat(), "data": {"payment_id": "PAY-BAD", "payer_iban": IBAN_REJECTED}})
    rejection = {
        "reason_code": "invalid_iban", "reason": f"payer_iban {IBAN_REJECTED!r} is not a valid IBAN: checksum",
        "original": {"topic": "payments", "partition": 0, "offset": 41, "key": "1012345672",
                     "key_encoding": "utf-8", "value": raw, "value_encoding": "utf-8"},
        "event_id": "bank-77", "event_source": "bank/80", "event_type": "payment.recorded",
        "rejected_by": "payments", "rejected_at": (riyadh(6, 9) + timedelta(seconds=1)).isoformat()}
    schemas().validate_data("event.rejected", rejection)
    messages = [*ledger.messages, RawMessage("rejections", 0, 0, b"1012345672", envelope.write(
        event_id="rejection-1:1", source="refund-ledger/payments", event_type="event.rejected",
        time=riyadh(6, 9, 0, 1), data=rejection, subject="rejection/payments/0/41"))]
    messages.append(RawMessage("ledger.refunds", 0, 999, b"k", f"not a cloud event: {IBAN_UNREADABLE}".encode()))
    return messages


def compose(pool: asyncpg.Pool, fields: FieldCipher):
    return build_api(lambda: pool, TEST_SECRET, RULES, None, lambda app: add_operational_routes(app, Health()),
                     lambda: NOW, fields=fields)


async def answers(pool: asyncpg.Pool, fields: FieldCipher) -> dict[tuple[str, str], str]:
    """Every GET endpoint for every role that may call it (the access log aside: it records these calls,
    with their times), and the IBAN searches, as the caller receives them."""
    seen = {}
    async with client_for(compose(pool, fields)) as client:
        for role in ROLES:
            calls = [(e.url, QUERY_VALUES.get(e.path) or {}) for e in ENDPOINTS
                     if e.method == "GET" and role in e.roles and e.path != "/api/v1/access-log"]
            calls += [(url, {"q": q}) for q in SEARCHES for url in ("/api/v1/search", "/api/v1/search.csv")]
            for url, params in calls:
                response = await client.get(url, headers=as_role(role), params=params)
                assert response.status_code == 200, (url, role, response.text)
                seen[called(role, url, params)] = response.text
    return seen


def called(role: str, url: str, params: dict[str, str] | None = None) -> tuple[str, str, str]:
    return role, url, json.dumps(params or {}, sort_keys=True)


def dump(database_url: str) -> str:
    """pg_dump of the whole database, with every bytea hex literal decoded as well."""
    text = subprocess.run([str(postgres_bin_dir() / "pg_dump"), "--no-owner", database_url], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    decoded = [bytes.fromhex(h).decode("utf-8", "replace") for h in re.findall(r"\\\\x([0-9a-f]+)", text)]
    return "\n".join([text, *decoded])


def plain(text: str) -> list[str]:
    return [iban for iban in SENT if iban in text]


@pytest.fixture(scope="module")
async def models(postgres):
    """The same ledger messages projected into a read model with a key and into one without."""
    key = AESCipher.create_key(32)  # a fresh test-only key
    fields = FieldCipher(key)
    urls = {"sealed": fresh_database(postgres), "clear": fresh_database(postgres)}
    async with read_model(urls["sealed"]) as sealed, read_model(urls["clear"]) as clear:
        messages = ledger_messages(sealed)
        for pool, cipher in ((sealed, fields), (clear, CLEAR)):
            assert await Projection(pool, fields=cipher).apply(messages) == len(messages) - 1  # one unreadable
        yield {"urls": urls, "fields": fields, "sealed": sealed, "clear": clear}


async def test_the_sealed_read_model_answers_exactly_as_the_clear_one(models):
    sealed, clear = await answers(models["sealed"], models["fields"]), await answers(models["clear"], CLEAR)
    print(f"{len(sealed)} answers compared")
    assert sealed == clear
    # and they say what they should: full IBANs to an auditor, masked to an agent, the search finds the cases
    assert json.loads(sealed[called("auditor", "/api/v1/payments/PAY-1")])["payer_iban"] == IBAN_OTHER
    assert json.loads(sealed[called("agent", "/api/v1/payments/PAY-1")])["payer_iban"] == masked(IBAN_OTHER)
    assert json.loads(sealed[called("admin", "/api/v1/refunds/RR-1")])["iban"] == IBAN_OWN
    assert json.loads(sealed[called("agent", "/api/v1/refunds/RR-1")])["iban"] == masked(IBAN_OWN)
    for q, expected in ((SEARCHES[0], {"PAY-2", "RR-1", "RR-DONE", VISA_AUTO}),
                        (SEARCHES[1], {"PAY-1", "AB-1", "RR-REFUSED"})):
        hits = json.loads(sealed[called("agent", "/api/v1/search", {"q": q})])
        assert hits["query_kind"] == "iban"
        assert {h["key"] for h in hits["items"]} == expected


async def test_a_dump_of_the_sealed_read_model_holds_no_iban_sent(models):
    for kind, fields in (("sealed", models["fields"]), ("clear", CLEAR)):
        async with client_for(compose(models[kind], fields)) as client:  # leave an IBAN search in the access log
            response = await client.get("/api/v1/search", headers=as_role("agent"), params={"q": IBAN_OTHER})
            assert response.status_code == 200
    found = {kind: plain(dump(models["urls"][kind])) for kind in ("sealed", "clear")}
    print(f"sealed read model: {len(SENT)} IBANs sent, {len(found['sealed'])} found in the dump")
    assert found == {"sealed": [], "clear": list(SENT)}


async def test_who_searched_an_account_is_found_by_its_keyed_hash(models):
    fields = models["fields"]
    async with client_for(compose(models["sealed"], fields)) as client:
        await client.get("/api/v1/search", headers=as_role("agent", "agent:who-looked"), params={"q": IBAN_OWN})
        log = await client.get("/api/v1/access-log", headers=as_role("admin"), params={"subject": "agent:who-looked"})
    assert [r["filters"] for r in log.json()["items"]] == [{"q": fields.lookup(IBAN_OWN)}]
    async with models["sealed"].acquire() as conn:
        who = await conn.fetch("SELECT subject FROM audit.access_log WHERE filters->>'q' = $1",
                               fields.lookup("SA03 8000 0000 6080 1016 7519"))  # as the auditor types it
        other = await conn.fetch("SELECT subject FROM audit.access_log WHERE filters->>'q' = $1",
                                 fields.lookup(IBAN_OTHER))
    assert "agent:who-looked" in {r["subject"] for r in who}
    assert "agent:who-looked" not in {r["subject"] for r in other}


async def test_an_iban_search_in_the_sealed_read_model_is_answered_from_an_index(models):
    """Tiny tables: with sequential scans disfavoured the planner takes an index if there is one, and
    with the keyed-hash index dropped (in a transaction rolled back) the same check finds no lookup."""
    pool = await asyncpg.create_pool(models["urls"]["sealed"], min_size=1, max_size=2, connection_class=Recording,
                                     server_settings={"enable_seqscan": "off"})
    try:
        Recording.log.clear()
        async with client_for(compose(pool, models["fields"])) as client:
            response = await client.get("/api/v1/search", headers=as_role("auditor"), params={"q": IBAN_OWN})
            assert response.status_code == 200
        sent = [(q, a) for q, a in Recording.log if "iban_hash" in q]
        assert len(sent) == 2, Recording.log
        async with pool.acquire() as conn:
            assert [await index_scans(conn, query, args) for query, args in sent] == [
                {"payments_payer_iban_hash"}, {"refunds_iban_hash"}]
            dropped = conn.transaction()
            await dropped.start()
            try:
                await conn.execute("DROP INDEX audit.refunds_iban_hash")
                assert await index_scans(conn, *sent[1]) == set()
            finally:
                await dropped.rollback()
    finally:
        await pool.close()


async def index_scans(conn: asyncpg.Connection, query: str, args: tuple) -> set[str]:
    """The indexes the plan of ``query`` looks the keyed hash up in (none: it reads the whole table,
    sequentially or along another index, and filters)."""
    plan = json.loads(await asyncpg.Connection.fetchval(conn, "EXPLAIN (FORMAT JSON) " + query, *args))
    return {n["Index Name"] for n in nodes(plan[0]["Plan"]) if "iban_hash" in n.get("Index Cond", "")}
