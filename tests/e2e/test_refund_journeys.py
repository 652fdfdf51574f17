"""The refund journeys end to end: A (government payments balance), B (Musaned
visas) and C (Absher pre-SADAD through the Jawazat queue). Partner events on
Kafka -> the services (real processes) -> bank orders -> bank returns -> the
audit API shows the audit facts."""

from __future__ import annotations

import json
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.kit.auth import issue_token
from services.kit.identity import with_check_digit
from services.refunds.domain import visa_refund_id
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.harness import ServiceProcess, produce, read_topic, start_all, wait_for
from tests.factories import IBAN_OTHER, IBAN_OWN, bank_completion, cloudevent, payment, refund_request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def journey_stack(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"j{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, TIMER_INTERVAL="0.5")
    processes = {name: ServiceProcess(name, env) for name in ("payments", "visas", "refunds", "audit")}
    try:
        start_all(processes.values())
        yield kafka.bootstrap_servers, prefix, processes
    finally:
        for process in processes.values():
            process.stop()


def person() -> str:
    return with_check_digit("1" + str(uuid.uuid4().int)[:8])


def paid(audit, token: str, payment_id: str) -> None:
    """Wait until the ledger holds the payment."""
    wait_for(lambda: audit.get(f"/api/v1/payments/{payment_id}", token)[0] == 200, 60, f"payment {payment_id}")


def post(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_bank_refund_is_held_ordered_paid_and_shown_with_its_audit_facts(journey_stack):
    bootstrap, prefix, services = journey_stack
    audit, who = services["audit"], person()
    token = issue_token(TEST_SECRET, "auditor", "e2e", 600)
    key = who.encode()
    produce(bootstrap, [(prefix + "payments", key, cloudevent("payment.recorded",
                                                              payment(f"P-{who}", beneficiary_id=who)))])
    paid(audit, token, f"P-{who}")  # topics carry no order between them: the bank asks after the payment landed
    request_id, wrong_id = f"RR-{who}", f"RW-{who}"
    produce(bootstrap, [
        (prefix + "refund-requests", key,
         cloudevent("refund.requested", refund_request(request_id, beneficiary_id=who))),
        (prefix + "refund-requests", key, cloudevent("refund.requested",
                                                     refund_request(wrong_id, beneficiary_id=who, iban=IBAN_OTHER))),
    ])

    def order():
        for record in read_topic(bootstrap, prefix + "bank-refund-orders"):
            event = json.loads(record.value)
            if event["data"]["refund_id"] == request_id:
                return event
        return None

    ordered = wait_for(order, 60, "the bank refund order")
    assert (ordered["data"]["amount"], ordered["data"]["bank_code"]) == (10000, "80")
    produce(bootstrap, [(prefix + "bank-returns", key, cloudevent("refund.completed", bank_completion(request_id)))])

    def case(refund_id, state):
        status, body = audit.get(f"/api/v1/refunds/{refund_id}", token)
        return body if status == 200 and body["state"] == state else None

    done = wait_for(lambda: case(request_id, "COMPLETED"), 60, "the completed refund in the audit API")
    assert (done["route"], done["channel"], done["bank_reference"]) == ("BANK", "BANK", "BR-1")
    assert done["sla"]["status"] == "MET" and done["completed_at"].endswith("+03:00")
    assert "BR-1" in done["tell_the_citizen"]["en"] and "BR-1" in done["tell_the_citizen"]["ar"]
    status, found = audit.get(f"/api/v1/search?q={who}", token)
    assert status == 200 and found["query_kind"] == "person"
    assert {(h["kind"], h["key"]) for h in found["items"]} >= {
        ("beneficiary", who), ("payment", f"P-{who}"), ("refund", request_id), ("refund", wrong_id)}
    by_reference = audit.get("/api/v1/search?q=BR-1", token)[1]["items"]
    assert request_id in {h["key"] for h in by_reference}
    by_iban = audit.get(f"/api/v1/search?q={IBAN_OWN}", token)[1]
    assert by_iban["query_kind"] == "iban" and f"P-{who}" in {h["key"] for h in by_iban["items"]}
    status, faq = audit.get("/api/v1/faq", token)
    assert status == 200 and faq and all(item["question"]["ar"] and item["answer"]["en"] for item in faq)
    assert [e["type"] for e in done["timeline"]][:1] == ["ledger.refund.requested"]
    assert {"ledger.refund.ordered", "ledger.refund.completed"} <= {e["type"] for e in done["timeline"]}
    refused = wait_for(lambda: case(wrong_id, "REJECTED"), 60, "the refused refund")
    assert refused["rejection_rule"] == "iban_not_payer" and refused["decided_by"] == "payments"

    def balance():
        status, body = audit.get(f"/api/v1/beneficiaries/{who}/balances", token)
        lines = body["balances"] if status == 200 else []
        return lines[0] if lines and lines[0]["refunded"] else None

    line = wait_for(balance, 60, "the refunded balance")
    assert (line["credited"], line["held"], line["refunded"], line["available"]) == (30000, 0, 10000, 20000)
    status, page = audit.get("/api/v1/refunds?status=REJECTED&limit=50", token)
    assert status == 200 and wrong_id in {item["refund_id"] for item in page["items"]}


def test_an_absher_request_waits_in_the_jawazat_queue_until_an_employee_decides(journey_stack):
    bootstrap, prefix, services = journey_stack
    audit, who = services["audit"], person()
    approve_id, decline_id = f"AB-{who}", f"AD-{who}"
    produce(bootstrap, [
        (prefix + "refund-requests", who.encode(), cloudevent(
            "refund.requested", refund_request(approve_id, beneficiary_id=who, channel="ABSHER", iban=IBAN_OTHER),
            source="absher")),
        (prefix + "refund-requests", who.encode(), cloudevent(
            "refund.requested", refund_request(decline_id, beneficiary_id=who, channel="ABSHER", iban=IBAN_OTHER),
            source="absher")),
    ])
    employee = issue_token(TEST_SECRET, "jawazat", "jawazat:e.alharbi", 600)

    def queued():
        status, body = audit.get("/api/v1/jawazat/queue?limit=500", employee)
        ids = {item["refund_id"] for item in body["items"]} if status == 200 else set()
        return {approve_id, decline_id} <= ids

    wait_for(queued, 60, "both requests in the Jawazat queue")
    auditor = issue_token(TEST_SECRET, "auditor", "e2e", 600)
    assert post(f"{audit.url}/api/v1/jawazat/refunds/{approve_id}/approve", auditor)[0] == 403
    status, accepted = post(f"{audit.url}/api/v1/jawazat/refunds/{approve_id}/approve", employee)
    assert status == 202 and accepted["decision"] == "approved"
    status, _ = post(f"{audit.url}/api/v1/jawazat/refunds/{decline_id}/reject", employee,
                     {"reason": "the balance was already refunded"})
    assert status == 202

    def state(refund_id, wanted):
        status, body = audit.get(f"/api/v1/refunds/{refund_id}", auditor)
        return body if status == 200 and body["state"] == wanted else None

    approved = wait_for(lambda: state(approve_id, "ORDERED"), 60, "the approved request ordered")
    assert approved["route"] == "JAWAZAT" and approved["next_step_owner"] == "BANK"
    declined = wait_for(lambda: state(decline_id, "REJECTED"), 60, "the declined request closed")
    assert (declined["decided_by"], declined["rejection_rule"]) == ("jawazat:e.alharbi", "declined_by_jawazat")
    assert declined["rejection_reason"] == "the balance was already refunded"
    assert post(f"{audit.url}/api/v1/jawazat/refunds/{decline_id}/approve", employee)[0] == 409


def test_a_cancelled_visa_is_refunded_on_its_route_and_shown_with_its_audit_facts(journey_stack):
    bootstrap, prefix, services = journey_stack
    audit, sponsor = services["audit"], person()
    token = issue_token(TEST_SECRET, "auditor", "e2e", 600)
    issued = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=10)
    visas = {"1": timedelta(hours=5), "2": timedelta(hours=80)}  # automatic; MoFA
    records = [(prefix + "payments", sponsor.encode(), cloudevent("payment.recorded", payment(
        f"SV-{sponsor}-{serial}", beneficiary_id=sponsor, amount=200000, agency="MUSANED", service_code="VISA_FEE",
        paid_at=issued - timedelta(hours=1)))) for serial in visas]
    for serial, after in visas.items():
        key = {"sponsor_id": sponsor, "export_number": "1448000008", "serial_number": serial}
        records += [
            (prefix + "visas", sponsor.encode(), cloudevent("visa.issued", {
                **key, "visa_type": "DOMESTIC_WORKER", "payment_id": f"SV-{sponsor}-{serial}", "fee": 200000,
                "issued_at": issued.isoformat()}, source="musaned")),
            (prefix + "cancellations", sponsor.encode(), cloudevent("visa.cancellation_requested", {
                **key, "requested_at": (issued + after).isoformat(), "channel": "MUSANED"}, source="musaned")),
            (prefix + "cancellations", sponsor.encode(), cloudevent("visa.cancellation_accepted", {
                **key, "accepted_at": (issued + after + timedelta(hours=2)).isoformat()}, source="musaned")),
        ]
    produce(bootstrap, records)
    refund_id = visa_refund_id(sponsor, "1448000008", "1")

    def ordered():
        return {json.loads(r.value)["data"]["refund_id"] for r in read_topic(bootstrap, prefix + "bank-refund-orders")
                } >= {refund_id, visa_refund_id(sponsor, "1448000008", "2")}

    wait_for(ordered, 60, "both visa refunds ordered from the bank")
    paid_at = issued + timedelta(hours=9)
    produce(bootstrap, [(prefix + "bank-returns", sponsor.encode(), cloudevent("refund.completed", bank_completion(
        refund_id, amount=200000, reference="BR-V1", at=paid_at)))])

    def visa(serial, refund_state):
        status, body = audit.get(f"/api/v1/visas/{sponsor}/1448000008/{serial}", token)
        return body if status == 200 and body["refund_state"] == refund_state else None

    automatic = wait_for(lambda: visa("1", "COMPLETED"), 60, "the refunded automatic visa")
    riyadh = lambda t: t.astimezone(timezone(timedelta(hours=3))).isoformat()  # noqa: E731
    assert automatic["issued_at"] == riyadh(issued)
    assert automatic["cancellation_requested_at"] == riyadh(issued + timedelta(hours=5))
    assert automatic["cancelled_at"] == riyadh(issued + timedelta(hours=7))
    assert (automatic["cancellation_channel"], automatic["route"]) == ("MUSANED", "AUTOMATIC")
    assert automatic["refunded_at"] == riyadh(paid_at) and automatic["bank_reference"] == "BR-V1"
    assert automatic["sla"]["status"] == "MET"
    kinds = {e["type"] for e in automatic["timeline"]}
    assert {"ledger.visa.issued", "ledger.visa.cancellation_routed", "ledger.refund.ordered",
            "ledger.refund.completed"} <= kinds
    status, paid = audit.get(f"/api/v1/payments/SV-{sponsor}-1", token)
    assert status == 200 and (paid["refund_state"], paid["refunded_at"]) == ("COMPLETED", riyadh(paid_at))
    found = audit.get(f"/api/v1/search?q={sponsor}%201448000008%201", token)[1]
    assert [(h["kind"], h["url"]) for h in found["items"]] == [
        ("visa", f"/api/v1/visas/{sponsor}/1448000008/1")]
    mofa = wait_for(lambda: visa("2", "ORDERED"), 60, "the MoFA visa refund")
    assert mofa["route"] == "MOFA" and mofa["hours_since_issue"] == 80.0
    assert mofa["sla"]["status"] in {"ON_TIME", "DUE_SOON"}  # 15 calendar days from acceptance, 10 days ago


def test_an_unanswered_order_goes_overdue_and_an_unacknowledged_payment_is_listed(journey_stack):
    bootstrap, prefix, services = journey_stack
    audit, who = services["audit"], person()
    token = issue_token(TEST_SECRET, "auditor", "e2e", 600)
    days_ago = datetime.now(timezone.utc) - timedelta(days=10)
    produce(bootstrap, [(prefix + "payments", who.encode(), cloudevent("payment.recorded", payment(
        f"OLD-{who}", beneficiary_id=who, paid_at=days_ago)))])
    paid(audit, token, f"OLD-{who}")
    produce(bootstrap, [(prefix + "refund-requests", who.encode(), cloudevent("refund.requested", refund_request(
        f"RO-{who}", beneficiary_id=who, at=days_ago + timedelta(hours=1))))])

    def overdue():
        status, page = audit.get("/api/v1/refunds?status=overdue&limit=500", token)
        # overdue from its first deadline check; then the hold comes back and the bank is ordered
        return [i for i in page["items"] if i["refund_id"] == f"RO-{who}" and i["state"] == "ORDERED"
                ] if status == 200 else None

    [case] = wait_for(overdue, 60, "the overdue, ordered refund in the audit API")
    assert (case["state"], case["next_step_owner"], case["sla"]["status"]) == ("ORDERED", "BANK", "OVERDUE")
    assert case["sla"]["business_days_elapsed"] >= 5

    def unreflected():
        status, page = audit.get("/api/v1/payments/unreflected?limit=500", token)
        return [i for i in page["items"] if i["payment_id"] == f"OLD-{who}"] if status == 200 else None

    [listed] = wait_for(unreflected, 60, "the unreflected payment")
    assert listed["responsible_agency"] == "JAWAZAT"


def test_the_journeys_move_the_metrics_sres_watch(journey_stack):
    _, prefix, services = journey_stack
    audit, refunds = services["audit"], services["refunds"]
    wait_for(lambda: audit.metric("refund_ledger_refunds", state="COMPLETED") > 0, 60,
             "refunds by state from the read model")
    assert audit.metric("refund_ledger_refunds", state="REJECTED", route="BANK") > 0
    assert audit.metric("refund_ledger_sla_breaches_total", route="BANK") > 0
    assert audit.metric("refund_ledger_unreflected_payments") > 0
    assert refunds.metric("refund_ledger_timers_fired_total", timer="refund.overdue") > 0
    assert refunds.metric("refund_ledger_outbox_published_total", topic="bank-refund-orders") > 0
    status, text = refunds.get("/metrics")
    assert status == 200
    lags = {(s.labels["topic"], s.labels["partition"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "refund_ledger_consumer_lag_messages"}
    assert {topic for topic, _ in lags} >= {prefix + "refund-requests", prefix + "bank-returns"}
    assert set(lags.values()) == {0.0}, "everything sent was applied"
