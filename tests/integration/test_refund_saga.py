"""The bank-channel refund saga between the payments and refunds services, on a
real PostgreSQL: request -> hold (or refusal with the rule) -> bank order ->
bank answer -> hold posted or released. The services' own outbound
CloudEvents are carried between their ingresses exactly as Kafka would."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from services.kit.envelope import RawMessage, SchemaRegistry, parse, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.outbox import OutboxRelay
from services.payments import application as payments
from services.payments import service as payments_service
from services.payments.domain import PaymentsError
from services.refunds import application as refunds
from services.refunds import service as refunds_service
from services.refunds.domain import RefundsError, visa_refund_id
from services.visas import application as visas
from services.visas import service as visas_service
from services.visas.domain import VisasError
from tests.factories import (
    IBAN_OTHER,
    PAID_AT,
    bank_completion,
    bank_failure,
    cloudevent,
    payment,
    refund_request,
)

pytestmark = pytest.mark.integration


@dataclass
class Side:
    """One service: its application, its ingress and how far its outbox was carried."""

    app: object
    ingress: Ingress
    relay: OutboxRelay
    position: int = 0
    offsets: dict[str, int] = field(default_factory=dict)

    def feed(self, topic: str, values: list[bytes]) -> None:
        messages = []
        for value in values:
            offset = self.offsets.get(topic, -1) + 1
            self.offsets[topic] = offset
            messages.append(RawMessage(topic, 0, offset, b"1012345672", value))
        if messages:
            self.ingress.apply(messages)

    def published(self) -> list:
        records, self.position, _ = self.relay._next(self.position)
        return records


@pytest.fixture
def saga(db_settings):
    registry = SchemaRegistry(resolve_schemas_dir(db_settings))
    pay_app = payments.PaymentsApplication(db_settings)
    ref_app = refunds.RefundsApplication(db_settings)
    pay = Side(pay_app, Ingress(pay_app, "payments", registry, payments.handlers(pay_app), (PaymentsError,),
                                timer_handlers=payments.timer_handlers(pay_app)),
               OutboxRelay(pay_app, "payments", payments_service.translate, None, None))
    ref = Side(ref_app, Ingress(ref_app, "refunds", registry, refunds.handlers(ref_app), (RefundsError,),
                                timer_handlers=refunds.timer_handlers(ref_app)),
               OutboxRelay(ref_app, "refunds", refunds_service.translate, None, None))
    visa_app = visas.VisasApplication(db_settings)
    visa = Side(visa_app, Ingress(visa_app, "visas", registry, visas.handlers(visa_app), (VisasError,)),
                OutboxRelay(visa_app, "visas", visas_service.translate, None, None))
    try:
        yield Saga(pay, ref, visa, registry)
    finally:
        pay_app.close()
        ref_app.close()
        visa_app.close()


@dataclass
class Saga:
    pay: Side
    ref: Side
    visa: Side
    registry: SchemaRegistry
    orders: list = field(default_factory=list)
    ledger: list = field(default_factory=list)

    def settle(self) -> None:
        """Carry every published event to its consumers until nothing moves."""
        for _ in range(10):
            moved = False
            routes = ((self.pay, self.ref, "ledger.payments"), (self.ref, self.pay, "ledger.refunds"),
                      (self.visa, self.ref, "ledger.visas"))
            for side, other, followed in routes:
                records = side.published()
                moved |= bool(records)
                for record in records:
                    self.ledger.append(json.loads(record.value))
                    if record.topic == "bank-refund-orders":
                        self.orders.append(json.loads(record.value))
                other.feed(followed, [r.value for r in records if r.topic == followed])
            if not moved:
                return
        raise AssertionError("the saga did not settle")

    def types(self) -> list[str]:
        return [e["type"] for e in self.ledger]


def funded(saga: Saga, amount: int = 30000) -> None:
    saga.pay.feed("payments", [cloudevent("payment.recorded", payment("PAY-1", amount=amount))])
    saga.settle()


def test_a_bank_refund_is_held_ordered_and_posted_when_the_bank_pays(saga):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-1", amount=10000))])
    saga.settle()
    [order] = saga.orders
    assert order["type"] == "refund.ordered"
    assert {k: order["data"][k] for k in ("refund_id", "amount", "iban", "bank_code", "route")} == {
        "refund_id": "RR-1", "amount": 10000, "iban": "SA0380000000608010167519", "bank_code": "80", "route": "BANK"}
    assert saga.pay.app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["held"] == 10000
    assert saga.ref.app.case("RR-1")["state"] == "ORDERED"

    saga.ref.feed("bank-returns", [cloudevent("refund.completed", bank_completion("RR-1", amount=10000))])
    saga.settle()
    balance = saga.pay.app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")
    assert (balance["held"], balance["refunded"], balance["available"]) == (0, 10000, 20000)
    assert saga.ref.app.case("RR-1")["state"] == "COMPLETED"
    assert [t.key for t in saga.ref.app.ingress_recorder.timers()] == []  # the SLA timer is cancelled
    assert "ledger.balance.refunded" in saga.types() and "ledger.refund.completed" in saga.types()


@pytest.mark.parametrize(("request_data", "rule"), [
    (refund_request("RR-2", iban=IBAN_OTHER), "iban_not_payer"),
    (refund_request("RR-3", amount=30001), "insufficient_balance"),
    (refund_request("RR-4", service_code="NATIONAL_ID"), "no_balance"),
    (refund_request("RR-5", beneficiary_id="1099999995"), "no_balance"),
])
def test_a_bank_refund_breaking_a_rule_is_rejected_with_that_rule(saga, request_data, rule):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", request_data)])
    saga.settle()
    [rejected] = [e for e in saga.ledger if e["type"] == "ledger.refund.rejected"]
    assert rejected["data"]["rule"] == rule and rejected["data"]["reason"]
    assert saga.orders == []
    assert saga.pay.app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["held"] == 0
    assert saga.ref.app.case(request_data["request_id"])["state"] == "REJECTED"


def test_a_bank_failure_releases_the_hold(saga):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-6", amount=10000))])
    saga.settle()
    saga.ref.feed("bank-returns", [cloudevent("refund.failed", bank_failure("RR-6"))])
    saga.settle()
    balance = saga.pay.app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")
    assert (balance["held"], balance["refunded"], balance["available"]) == (0, 0, 30000)
    assert saga.ref.app.case("RR-6")["state"] == "FAILED"


def test_a_bank_answer_before_its_order_is_parked_and_applied_once_the_order_exists(saga):
    funded(saga)
    saga.ref.feed("bank-returns", [cloudevent("refund.completed", bank_completion("RR-7", amount=10000))])
    saga.settle()
    assert saga.ref.app.case("RR-7") is None
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-7", amount=10000))])
    saga.settle()
    assert saga.ref.app.case("RR-7")["state"] == "COMPLETED"
    balance = saga.pay.app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")
    assert (balance["held"], balance["refunded"]) == (0, 10000)


def test_a_bank_answer_that_does_not_match_the_order_is_rejected_not_applied(saga):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-8", amount=10000))])
    saga.settle()
    saga.ref.feed("bank-returns", [cloudevent("refund.completed", bank_completion("RR-8", amount=9999))])
    saga.settle()
    [rejection] = [e for e in saga.ledger if e["type"] == "event.rejected"]
    assert rejection["data"]["reason_code"] == "return_mismatch"
    assert saga.ref.app.case("RR-8")["state"] == "ORDERED"


def test_an_open_refund_past_its_deadline_is_marked_overdue_once(saga):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-9", amount=10000))])
    saga.settle()
    deadline = saga.ref.app.case("RR-9")["deadline"]
    assert deadline > PAID_AT + timedelta(days=1)
    late = saga.ref.ingress.clock
    try:
        saga.ref.ingress.clock = lambda: deadline + timedelta(minutes=5)
        assert saga.ref.ingress.fire_timers() > 0
        assert saga.ref.ingress.fire_timers() == 0
    finally:
        saga.ref.ingress.clock = late
    saga.settle()
    [overdue] = [e for e in saga.ledger if e["type"] == "ledger.refund.overdue"]
    assert (overdue["data"]["refund_id"], overdue["data"]["owner"]) == ("RR-9", "BANK")
    assert saga.ref.app.case("RR-9")["overdue"] is True


def test_every_event_the_saga_publishes_validates_against_the_schemas(saga):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-10", amount=10000)),
                                      cloudevent("refund.requested", refund_request("RR-11", iban=IBAN_OTHER))])
    saga.settle()
    saga.ref.feed("bank-returns", [cloudevent("refund.completed", bank_completion("RR-10", amount=10000))])
    saga.settle()
    for n, event in enumerate(saga.ledger):
        parse(RawMessage("any", 0, n, None, json.dumps(event).encode()), saga.registry, saga.registry.types)
    assert {"refund.ordered", "ledger.refund.rejected", "ledger.balance.held", "ledger.balance.hold_refused",
            "ledger.refund.completed", "ledger.balance.refunded"} <= set(saga.types())


SPONSOR = "1012345672"
ISSUED = PAID_AT + timedelta(hours=2)


def visa_event(event_type: str, **data) -> bytes:
    key = {"sponsor_id": SPONSOR, "export_number": "1448001238", "serial_number": "3"}
    return cloudevent(event_type, {**key, **data}, source="nic" if event_type == "visa.status_changed" else "musaned")


def cancel_visa(saga: Saga, *, after: timedelta, visa_type: str = "DOMESTIC_WORKER") -> None:
    saga.visa.feed("visas", [visa_event("visa.issued", visa_type=visa_type, payment_id="PAY-V", fee=200000,
                                        issued_at=ISSUED.isoformat())])
    saga.visa.feed("cancellations", [
        visa_event("visa.cancellation_requested", requested_at=(ISSUED + after).isoformat(), channel="MUSANED"),
        visa_event("visa.cancellation_accepted", accepted_at=(ISSUED + after + timedelta(hours=1)).isoformat())])
    saga.settle()


def pay_visa_fee(saga: Saga, payer_id: str = SPONSOR, iban: str = "SA0380000000608010167519") -> None:
    saga.pay.feed("payments", [cloudevent("payment.recorded", payment(
        "PAY-V", beneficiary_id=SPONSOR, payer_id=payer_id, payer_iban=iban, amount=200000, agency="MUSANED",
        service_code="VISA_FEE"))])
    saga.settle()


@pytest.mark.parametrize(("after", "route"), [(timedelta(hours=71, minutes=59), "AUTOMATIC"),
                                              (timedelta(hours=72), "MOFA")])
def test_a_visa_cancellation_refunds_the_paying_account_on_its_route(saga, after, route):
    pay_visa_fee(saga, payer_id="2012345670", iban=IBAN_OTHER)
    cancel_visa(saga, after=after)
    [order] = saga.orders
    assert (order["data"]["route"], order["data"]["iban"], order["data"]["amount"]) == (route, IBAN_OTHER, 200000)
    refund_id = order["data"]["refund_id"]
    case = saga.ref.app.case(refund_id)
    assert case["state"] == "ORDERED"
    accepted = ISSUED + after + timedelta(hours=1)
    if route == "MOFA":
        assert case["deadline"].date() == (accepted + timedelta(days=15)).date()
    else:
        assert case["deadline"] - accepted < timedelta(days=8)  # three business days (+ a weekend)
    [opened] = [e for e in saga.ledger if e["type"] == "ledger.refund.requested"]
    assert opened["data"]["third_party_payer"] is True  # the money goes back to the payer, not the sponsor


def test_a_visa_refund_that_starts_before_its_payment_is_known_opens_when_the_payment_arrives(saga):
    cancel_visa(saga, after=timedelta(hours=5))
    assert saga.orders == []
    pay_visa_fee(saga)
    [order] = saga.orders
    assert order["data"]["route"] == "AUTOMATIC"


def test_a_visit_visa_opens_no_refund(saga):
    pay_visa_fee(saga)
    cancel_visa(saga, after=timedelta(hours=5), visa_type="VISIT")
    assert saga.orders == []
    assert "ledger.visa.closed_non_refundable" in saga.types()


def test_fees_restored_without_a_bank_completion_by_the_deadline_is_a_status_mismatch_once(saga):
    pay_visa_fee(saga)
    cancel_visa(saga, after=timedelta(hours=5))
    [order] = saga.orders
    saga.visa.feed("visas", [visa_event("visa.status_changed", status="FEES_RESTORED",
                                        changed_at=(ISSUED + timedelta(days=1)).isoformat())])
    saga.settle()
    deadline = saga.ref.app.case(order["data"]["refund_id"])["deadline"]
    saga.ref.ingress.clock = lambda: deadline + timedelta(minutes=1)
    saga.ref.ingress.fire_timers()
    saga.ref.ingress.fire_timers()
    saga.settle()
    [mismatch] = [e for e in saga.ledger if e["type"] == "ledger.refund.status_mismatch"]
    assert (mismatch["data"]["refund_state"], mismatch["data"]["owner"]) == ("ORDERED", "BANK")


def test_fees_restored_and_paid_in_time_is_no_mismatch(saga):
    pay_visa_fee(saga)
    cancel_visa(saga, after=timedelta(hours=5))
    [order] = saga.orders
    refund_id = order["data"]["refund_id"]
    saga.ref.feed("bank-returns", [cloudevent("refund.completed", bank_completion(
        refund_id, amount=200000, at=ISSUED + timedelta(days=1)))])
    saga.visa.feed("visas", [visa_event("visa.status_changed", status="FEES_RESTORED",
                                        changed_at=(ISSUED + timedelta(days=1)).isoformat())])
    saga.settle()
    deadline = saga.ref.app.case(refund_id)["deadline"]
    saga.ref.ingress.clock = lambda: deadline + timedelta(minutes=1)
    saga.ref.ingress.fire_timers()
    saga.settle()
    assert "ledger.refund.status_mismatch" not in saga.types()
    assert saga.ref.app.case(refund_id)["state"] == "COMPLETED"


def test_a_covid_window_visa_waits_for_mofa_review_and_is_ordered_on_approval(saga):
    pay_visa_fee(saga)
    covid_issue = datetime(2021, 6, 1, 10, tzinfo=timezone.utc)
    key = {"sponsor_id": SPONSOR, "export_number": "1448001238", "serial_number": "3"}
    saga.visa.feed("visas", [cloudevent("visa.issued", {**key, "visa_type": "DOMESTIC_WORKER", "payment_id": "PAY-V",
                                                        "fee": 200000, "issued_at": covid_issue.isoformat()},
                                        source="musaned")])
    requested, accepted = covid_issue + timedelta(days=400), covid_issue + timedelta(days=401)
    saga.visa.feed("cancellations", [
        cloudevent("visa.cancellation_requested", {**key, "requested_at": requested.isoformat(), "channel": "MUSANED"},
                   source="musaned"),
        cloudevent("visa.cancellation_accepted", {**key, "accepted_at": accepted.isoformat()}, source="musaned")])
    saga.settle()
    refund_id = visa_refund_id(SPONSOR, "1448001238", "3")
    assert saga.ref.app.case(refund_id)["state"] == "MANUAL_REVIEW" and saga.orders == []
    decision = {"refund_id": refund_id, "queue": "MANUAL_REVIEW", "decided_by": "mofa:a.alqahtani",
                "decided_at": (covid_issue + timedelta(days=403)).isoformat()}
    saga.ref.feed("refund-decisions", [cloudevent("refund.approved", decision, source="mofa")] * 2)
    saga.settle()
    [order] = saga.orders
    assert (order["data"]["refund_id"], order["data"]["route"]) == (refund_id, "MANUAL_REVIEW")
    [ordered] = [e for e in saga.ledger if e["type"] == "ledger.refund.ordered"]
    assert ordered["data"]["decided_by"] == "mofa:a.alqahtani"


def test_a_decision_for_a_refund_in_another_queue_is_rejected(saga):
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-20", amount=10000))])
    saga.settle()
    saga.ref.feed("refund-decisions", [cloudevent("refund.approved", {
        "refund_id": "RR-20", "queue": "JAWAZAT_QUEUE", "decided_by": "jawazat:x",
        "decided_at": (PAID_AT + timedelta(days=2)).isoformat()}, source="jawazat")])
    saga.settle()
    [rejection] = [e for e in saga.ledger if e["type"] == "event.rejected"]
    assert rejection["data"]["reason_code"] == "not_awaiting_decision"


def test_a_bank_cannot_answer_for_a_refund_paid_into_another_banks_account(saga):
    """refund.failed names no account: a bank's valid signature must not let it fail another bank's refund,
    live or parked."""
    funded(saga)
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-8", amount=10000))])
    saga.settle()
    saga.ref.feed("bank-returns", [cloudevent("refund.failed", bank_failure("RR-8"), source="bank/20")])
    saga.ref.feed("bank-returns", [cloudevent("refund.failed", bank_failure("RR-9"), source="bank/20")])  # parked
    saga.settle()
    [rejection] = [e for e in saga.ledger if e["type"] == "event.rejected"]
    assert rejection["data"]["reason_code"] == "wrong_bank"
    assert saga.ref.app.case("RR-8")["state"] == "ORDERED"
    saga.ref.feed("refund-requests", [cloudevent("refund.requested", refund_request("RR-9", amount=10000))])
    saga.settle()
    assert saga.ref.app.case("RR-9")["state"] == "ORDERED"  # the parked answer of the wrong bank was discarded
