"""Journey A (government payments balance) and journey C (Absher pre-SADAD
through the Jawazat queue) end to end: partner events on Kafka -> payments and
refunds services (real processes) -> bank orders -> bank returns -> the audit
API shows the audit facts."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from services.kit.auth import issue_token
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.harness import ServiceProcess, produce, read_topic, start_all, wait_for
from tests.factories import IBAN_OTHER, bank_completion, cloudevent, payment, refund_request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def journey_stack(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"j{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, TIMER_INTERVAL="0.5")
    processes = {name: ServiceProcess(name, env) for name in ("payments", "refunds", "audit")}
    try:
        start_all(processes.values())
        yield kafka.bootstrap_servers, prefix, processes
    finally:
        for process in processes.values():
            process.stop()


def person() -> str:
    return "1" + str(uuid.uuid4().int)[:9]


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
