"""Four eyes in the ledger itself, on a real PostgreSQL: an Absher refund above the rules' amount
is ordered only after a second, different Jawazat employee approves; the maker's own second
approval is rejected with its reason. The services' CloudEvents are carried between their
ingresses as Kafka would (the pattern of test_refund_saga.py), then projected into the audit
read model and read back through the audit API."""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
import httpx
import pytest

from services.audit.app import build_api
from services.audit.projections import Projection, create_schema
from services.kit.auth import issue_token
from services.kit.envelope import RawMessage
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from tests.conftest import TEST_SECRET
from tests.factories import PAID_AT, cloudevent, payment, refund_request
from tests.integration.test_refund_saga import Saga, saga  # noqa: F401 - the saga fixture

pytestmark = pytest.mark.integration

RULES = load_rules()
ABOVE = RULES.four_eyes_above + 1
MAKER, CHECKER = "jawazat:e.alharbi", "jawazat:n.alqahtani"


def approval(refund_id: str, by: str, hours: int) -> bytes:
    return cloudevent("refund.approved", {
        "refund_id": refund_id, "queue": "JAWAZAT_QUEUE", "decided_by": by,
        "decided_at": (PAID_AT + timedelta(days=1, hours=hours)).isoformat()}, source="jawazat")


def absher_request(flow: Saga, refund_id: str, amount: int) -> None:
    flow.pay.feed("payments", [cloudevent("payment.recorded", payment("PAY-1", amount=amount))])
    flow.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request(
        refund_id, amount=amount, channel="ABSHER"))])
    flow.settle()


def test_above_the_threshold_the_order_goes_out_only_after_a_second_different_approver(saga):  # noqa: F811
    absher_request(saga, "AB-4E", ABOVE)
    saga.ref.feed("refund-decisions", [approval("AB-4E", MAKER, 1)])
    saga.settle()
    [recorded] = [e for e in saga.ledger if e["type"] == "ledger.refund.approval_recorded"]
    saga.registry.validate_data("ledger.refund.approval_recorded", recorded["data"])
    assert (recorded["data"]["approved_by"], recorded["data"]["amount"]) == (MAKER, ABOVE)
    assert (saga.ref.app.case("AB-4E")["state"], saga.orders) == ("JAWAZAT_QUEUE", [])

    saga.ref.feed("refund-decisions", [approval("AB-4E", MAKER, 2)])  # the maker tries to check
    saga.settle()
    [refused] = [e for e in saga.ledger if e["type"] == "event.rejected"]
    assert refused["data"]["reason_code"] == "four_eyes_same_approver"
    assert "second, different employee" in refused["data"]["reason"]
    assert (saga.ref.app.case("AB-4E")["state"], saga.orders) == ("JAWAZAT_QUEUE", [])

    saga.ref.feed("refund-decisions", [approval("AB-4E", CHECKER, 3)])
    saga.settle()
    [order] = saga.orders
    assert (order["data"]["refund_id"], order["data"]["amount"]) == ("AB-4E", ABOVE)
    [ordered] = [e for e in saga.ledger if e["type"] == "ledger.refund.ordered"]
    assert ordered["data"]["decided_by"] == CHECKER
    assert saga.ref.app.case("AB-4E")["state"] == "ORDERED"


def test_at_or_below_the_threshold_one_approval_orders_the_refund(saga):  # noqa: F811
    absher_request(saga, "AB-1E", RULES.four_eyes_above)
    saga.ref.feed("refund-decisions", [approval("AB-1E", MAKER, 1)])
    saga.settle()
    assert [o["data"]["refund_id"] for o in saga.orders] == ["AB-1E"]
    assert "ledger.refund.approval_recorded" not in saga.types()


async def test_the_audit_queue_shows_who_approved_first_and_refuses_the_maker_as_checker(saga, db_settings):  # noqa: F811
    absher_request(saga, "AB-4E", ABOVE)
    saga.ref.feed("refund-decisions", [approval("AB-4E", MAKER, 1)])
    saga.settle()
    ledger = [e for e in saga.ledger if e["type"].startswith("ledger.") or e["type"] == "event.rejected"]
    pool = await asyncpg.create_pool(db_settings.database_url, min_size=1, max_size=4)
    sent = []

    async def decide(event_type, data):
        sent.append((event_type, data["decided_by"]))
        return f"cmd-{len(sent)}"

    try:
        await create_schema(pool)
        topics = {"ledger.payment": "ledger.payments", "ledger.balance": "ledger.payments",
                  "ledger.refund": "ledger.refunds"}
        messages = [RawMessage(next(t for p, t in topics.items() if e["type"].startswith(p)), 0, i, b"k",
                               json.dumps(e).encode())
                    for i, e in enumerate(ledger) if e["type"] != "event.rejected"]
        await Projection(pool).apply(messages)
        api = build_api(lambda: pool, TEST_SECRET, RULES, decide, lambda app: add_operational_routes(app, Health()))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://audit.test") as http:
            def as_(subject):
                return {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'jawazat', subject, 600)}"}
            queue = (await http.get("/api/v1/jawazat/queue", headers=as_(CHECKER))).json()
            own = await http.post("/api/v1/jawazat/refunds/AB-4E/approve", headers=as_(MAKER))
            check = await http.post("/api/v1/jawazat/refunds/AB-4E/approve", headers=as_(CHECKER))
            case = (await http.get("/api/v1/refunds/AB-4E", headers=as_(CHECKER))).json()
    finally:
        await pool.close()
    [item] = queue["items"]
    assert (item["refund_id"], item["awaiting_second_approval"], item["first_approved_by"]) == ("AB-4E", True, MAKER)
    assert own.status_code == 409 and "you made the first approval" in own.json()["detail"]
    assert (check.status_code, check.json()["second_approval_needed"]) == (202, False)
    assert sent == [("refund.approved", CHECKER)], "the maker's own check is never sent"
    assert case["liaison"]["agency"] == "JAWAZAT" and case["liaison"]["name"]["ar"]
    assert any(t["type"] == "ledger.refund.approval_recorded" for t in case["timeline"])
