"""Four eyes through Kafka: real refunds and audit processes on the real broker and PostgreSQL.

An Absher request above the rules' four-eyes amount: the first Jawazat approval (through the audit
API, on ``refund-decisions``) is recorded and the case stays in the queue; the maker's own second
approval is answered 409 by the API and, sent straight to the topic as if it had raced the read
model, is rejected by the ledger (``four_eyes_same_approver``); a second, different employee's
approval orders the bank, once.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from services.kit.auth import issue_token
from services.kit.identity import with_check_digit
from services.kit.rules import load_rules
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.harness import ServiceProcess, produce, read_topic, start_all, wait_for
from tests.e2e.test_refund_journeys import post
from tests.factories import IBAN_OTHER, cloudevent, refund_request

pytestmark = pytest.mark.e2e

MAKER, CHECKER = "jawazat:e.alharbi", "jawazat:n.alqahtani"


@pytest.fixture(scope="module")
def four_eyes_stack(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"f{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix)
    processes = {name: ServiceProcess(name, env) for name in ("refunds", "audit")}
    try:
        start_all(processes.values())
        yield kafka.bootstrap_servers, prefix, processes["audit"]
    finally:
        for process in processes.values():
            process.stop()


def test_a_large_absher_refund_is_ordered_only_after_a_second_different_jawazat_employee(four_eyes_stack):
    bootstrap, prefix, audit = four_eyes_stack
    who = with_check_digit("1" + str(uuid.uuid4().int)[:8])
    refund_id, amount = f"AB-{who}", load_rules().four_eyes_above + 100000
    produce(bootstrap, [(prefix + "refund-requests", who.encode(), cloudevent(
        "refund.requested", refund_request(refund_id, beneficiary_id=who, amount=amount, channel="ABSHER",
                                           iban=IBAN_OTHER), source="absher"))])
    maker, checker = (issue_token(TEST_SECRET, "jawazat", s, 600) for s in (MAKER, CHECKER))

    def case(**wanted):
        status, body = audit.get(f"/api/v1/refunds/{refund_id}", checker)
        return body if status == 200 and all(body.get(k) == v for k, v in wanted.items()) else None

    wait_for(lambda: case(state="JAWAZAT_QUEUE"), 60, "the request in the Jawazat queue")
    status, accepted = post(f"{audit.url}/api/v1/jawazat/refunds/{refund_id}/approve", maker)
    assert (status, accepted["second_approval_needed"]) == (202, True)
    first = wait_for(lambda: case(first_approved_by=MAKER), 60, "the first approval recorded")
    assert (first["state"], first["awaiting_second_approval"]) == ("JAWAZAT_QUEUE", True)

    status, refused = post(f"{audit.url}/api/v1/jawazat/refunds/{refund_id}/approve", maker)
    assert status == 409 and "first approval" in refused["detail"]
    # the same check raced past the read model, straight onto the topic: the ledger itself refuses it
    raced_id = str(uuid.uuid4())
    produce(bootstrap, [(prefix + "refund-decisions", refund_id.encode(), cloudevent("refund.approved", {
        "refund_id": refund_id, "queue": "JAWAZAT_QUEUE", "decided_by": MAKER,
        "decided_at": datetime.now(timezone.utc).isoformat()}, event_id=raced_id, source="jawazat"))])

    def refusal():
        for record in read_topic(bootstrap, prefix + "rejections"):
            data = json.loads(record.value)["data"]
            if data.get("event_id") == raced_id:
                return data
        return None

    assert wait_for(refusal, 60, "the maker's raced check rejected")["reason_code"] == "four_eyes_same_approver"
    assert case(state="JAWAZAT_QUEUE") is not None

    status, accepted = post(f"{audit.url}/api/v1/jawazat/refunds/{refund_id}/approve", checker)
    assert (status, accepted["second_approval_needed"]) == (202, False)
    ordered = wait_for(lambda: case(state="ORDERED"), 60, "the refund ordered after the second approval")
    assert (ordered["decided_by"], ordered["first_approved_by"]) == (CHECKER, MAKER)
    orders = [json.loads(r.value)["data"] for r in read_topic(bootstrap, prefix + "bank-refund-orders")]
    assert [(o["refund_id"], o["amount"]) for o in orders if o["refund_id"] == refund_id] == [(refund_id, amount)]
