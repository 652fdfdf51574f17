"""Tamper evidence on a real PostgreSQL: events run through the payments service's
ingress, then rows are edited behind its back; ``refund-ledger verify`` names each
altered or deleted event, and an untouched store verifies clean."""

from __future__ import annotations

import hashlib
from uuid import UUID

import psycopg
import psycopg.rows
import pytest

from services.cli import main
from services.cli.verify import verify_schema
from services.kit.chain import GENESIS, chains_digest, event_hash
from services.kit.envelope import SchemaRegistry, resolve_schemas_dir
from services.kit.identity import with_check_digit
from services.kit.ingress import Ingress
from services.kit.store import chain_heads
from services.payments.application import PaymentsApplication, handlers, timer_handlers
from services.payments.domain import PaymentsError
from tests.conftest import make_settings
from tests.factories import Messages, acknowledgement, charge, cloudevent, payment

pytestmark = pytest.mark.integration

PEOPLE = ("1012345672", "2098765437", "1000000008")


@pytest.fixture
def store(database_url):
    """A payments store filled through the real ingress in several batches, with a digest after each."""
    settings = make_settings(database_url, CHAIN_DIGEST_INTERVAL="0")
    app = PaymentsApplication(settings)
    try:
        ingress = Ingress(app=app, service="payments", registry=SchemaRegistry(resolve_schemas_dir(settings)),
                          handlers=handlers(app), rejectable=(PaymentsError,), timer_handlers=timer_handlers(app))
        msg = Messages()
        for n, person in enumerate(PEOPLE):
            outcome = ingress.apply([
                msg(cloudevent("payment.recorded", payment(f"PAY-{n}", beneficiary_id=person, payer_id=person))),
                msg(cloudevent("payment.acknowledged", acknowledgement(f"PAY-{n}"), source="nic")),
                msg(cloudevent("fee.charged", charge(f"CHG-{n}-a", beneficiary_id=person, amount=1000))),
                msg(cloudevent("payment.recorded", {"bad": "event"}))])  # a rejection: its events chain too
            assert outcome.applied == 3 and sum(outcome.rejected.values()) == 1
        for n, person in enumerate(PEOPLE):
            ingress.apply([msg(cloudevent("fee.charged", charge(f"CHG-{n}-b", beneficiary_id=person, amount=500)))])
        # one full batch: a chain write and a digest after hundreds of events in one pipelined transaction
        many = [with_check_digit(f"1{n:08d}") for n in range(200, 500)]
        assert ingress.apply([msg(cloudevent("payment.recorded", payment(f"BIG-{p}", beneficiary_id=p, payer_id=p)))
                              for p in many]).applied == len(many)
    finally:
        app.close()
    return database_url


def sql(database_url: str, statement: str, params=()) -> list:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def a_long_chain(database_url: str) -> tuple[UUID, int]:
    """An aggregate with at least three events, and its newest version."""
    [(originator_id, newest)] = sql(database_url, "SELECT originator_id, max(originator_version) FROM "
                                    "payments.payments_events GROUP BY 1 HAVING max(originator_version) >= 3 "
                                    "ORDER BY 1 LIMIT 1")
    return originator_id, newest


def verify(database_url: str, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code = main(["verify", "--schema", "payments"])
    return code, capsys.readouterr().out


def test_an_untouched_store_verifies_clean(store, monkeypatch, capsys):
    report = verify_schema(store, "payments")
    print(f"events {report.events}, chains {report.chains}, digests {report.digests}, "
          f"findings {len(report.findings)}")
    assert report.findings == []
    assert report.events >= 600 and report.chains >= 600 and report.digests == 7
    code, out = verify(store, monkeypatch, capsys)
    assert code == 0 and "payments: OK" in out


def test_the_chain_is_the_documented_recipe(store):
    originator_id, _ = a_long_chain(store)
    rows = sql(store, "SELECT e.originator_version, e.topic, e.state, h.hash, h.state_sha256 "
                      "FROM payments.payments_events e JOIN payments.event_hashes h "
                      "USING (originator_id, originator_version) WHERE originator_id = %s "
                      "ORDER BY 1", (originator_id,))
    link = GENESIS
    for version, topic, state, recorded, state_sha256 in rows:
        assert state_sha256 == hashlib.sha256(state).hexdigest()
        link = event_hash(link, originator_id, version, topic, bytes(state))
        assert recorded == link, version


def test_verify_names_an_event_whose_stored_state_was_updated(store, monkeypatch, capsys):
    originator_id, _ = a_long_chain(store)
    sql(store, "UPDATE payments.payments_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
               "'\"amount\":30000', '\"amount\":90000'), 'UTF8') "
               "WHERE originator_id = %s AND originator_version = 2 RETURNING 1", (originator_id,))
    [finding] = verify_schema(store, "payments").findings
    print(f"altered: {finding}")
    assert (finding.originator_id, finding.version) == (originator_id, 2)
    assert "stored state altered" in finding.what
    code, out = verify(store, monkeypatch, capsys)
    assert code == 1 and f"first: payments: aggregate {originator_id} version 2: stored state altered" in out


def test_verify_names_a_deleted_event(store, monkeypatch, capsys):
    originator_id, _ = a_long_chain(store)
    sql(store, "DELETE FROM payments.payments_events WHERE originator_id = %s AND originator_version = 2",
        (originator_id,))
    findings = verify_schema(store, "payments").findings
    print(f"deleted: {findings[0]}")
    assert (findings[0].originator_id, findings[0].version) == (originator_id, 2)
    assert findings[0].what.startswith("deleted")
    code, _ = verify(store, monkeypatch, capsys)
    assert code == 1


def test_verify_names_an_event_deleted_with_its_hash(store):
    originator_id, _ = a_long_chain(store)
    for table in ("payments_events", "event_hashes"):
        sql(store, f"DELETE FROM payments.{table} WHERE originator_id = %s AND originator_version = 2",
            (originator_id,))
    [finding, *_] = verify_schema(store, "payments").findings
    assert (finding.originator_id, finding.version) == (originator_id, 2)
    assert "version 2 missing" in finding.what


def test_a_consistently_rewritten_event_breaks_the_link_to_the_next(store):
    # The forger updates the state and recomputes its own hash rows: the next event still links
    # to the hash that was recorded before, so the chain names the rewritten event's successor.
    originator_id, _ = a_long_chain(store)
    [(topic, state, link)] = sql(store, "SELECT e.topic, e.state, p.hash FROM payments.payments_events e "
                                        "JOIN payments.event_hashes p ON p.originator_id = e.originator_id "
                                        "AND p.originator_version = 1 WHERE e.originator_id = %s "
                                        "AND e.originator_version = 2", (originator_id,))
    forged = bytes(state).replace(b'"amount":30000', b'"amount":90000')
    assert forged != bytes(state)
    sql(store, "UPDATE payments.payments_events SET state = %s WHERE originator_id = %s AND originator_version = 2",
        (forged, originator_id))
    sql(store, "UPDATE payments.event_hashes SET state_sha256 = %s, hash = %s "
               "WHERE originator_id = %s AND originator_version = 2",
        (hashlib.sha256(forged).hexdigest(), event_hash(link, originator_id, 2, topic, forged), originator_id))
    [finding, *_] = verify_schema(store, "payments").findings
    assert (finding.originator_id, finding.version) == (originator_id, 3)
    assert "previous event's hash differs" in finding.what


def test_deleting_the_newest_event_with_its_hash_breaks_the_digest(store):
    originator_id, newest = a_long_chain(store)
    for table in ("payments_events", "event_hashes"):
        sql(store, f"DELETE FROM payments.{table} WHERE originator_id = %s AND originator_version = %s",
            (originator_id, newest))
    findings = verify_schema(store, "payments").findings
    assert findings and all(f.originator_id is None and "no longer matches" in f.what for f in findings)


def test_the_digest_read_page_by_page_equals_the_digest_of_all_heads_at_once(store):
    """The digest streams chain heads a page at a time (memory bounded by the page, not by the
    aggregates); pages of 7 over ~600 chains give the digest of the whole sorted list, which is what
    the recorded digests hold."""
    with psycopg.connect(store) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as curs:
        [(up_to, recorded)] = sql(store, "SELECT up_to_notification, digest FROM payments.chain_digests "
                                         "ORDER BY id DESC LIMIT 1")
        paged = chains_digest(chain_heads(curs, "payments", "payments_events", up_to, page=7))
        everything = list(chain_heads(curs, "payments", "payments_events", up_to, page=1_000_000))
    assert paged[0] == len(everything) >= 600
    assert paged[1] == chains_digest(sorted(everything, key=lambda head: head[0].bytes))[1] == recorded
    assert [h[0] for h in everything] == sorted((h[0] for h in everything), key=lambda i: i.bytes)
