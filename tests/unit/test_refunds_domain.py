"""Refunds domain rules, asserted on the events the refund aggregates emit. No I/O.

Deadlines are inputs here (the application computes them from the business
calendar); every datetime is timezone-aware.
"""

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from services.refunds.domain import (
    AlreadyClosed,
    NotAwaitingDecision,
    ParkedReturn,
    PaymentRef,
    RefundCase,
    RefundConflict,
    ReturnMismatch,
    WrongBank,
    visa_refund_id,
)

UTC = timezone.utc
RIYADH = timezone(timedelta(hours=3))
IBAN_OWN = "SA0380000000608010167519"       # Al Rajhi (80), valid mod-97
IBAN_OTHER = "SA4420000001234567891234"     # Riyad Bank (20), valid mod-97
REQUESTED_AT = datetime(2026, 11, 2, 9, 0, tzinfo=RIYADH)
HELD_AT = REQUESTED_AT + timedelta(minutes=2)
DEADLINE = datetime(2026, 11, 5, 9, 0, tzinfo=RIYADH)   # 3 business days, as the calendar would give it
BEFORE_DEADLINE = DEADLINE - timedelta(microseconds=1)
AFTER_DEADLINE = DEADLINE + timedelta(microseconds=1)
FACTS = dict(beneficiary_id="1012345672", agency="JAWAZAT", service_code="PASSPORT_ISSUE", amount=10000,
             iban=IBAN_OWN, channel="BANK", requested_at=REQUESTED_AT)
#: route -> (first state, route owner), as the application opens each kind of case.
ROUTES = {"BANK": ("AWAITING_HOLD", "BANK"), "JAWAZAT": ("JAWAZAT_QUEUE", "JAWAZAT"),
          "AUTOMATIC": ("ACCEPTED", "MUSANED"), "MANUAL_REVIEW": ("MANUAL_REVIEW", "MOFA")}


def origin(event_type: str, event_id: str = "evt-1", source: str = "bank/80") -> dict[str, str]:
    return {"source": source, "id": event_id, "type": event_type}


def open_case(route: str = "BANK", refund_id: str = "RR-1") -> RefundCase:
    """A new case as the application opens it; its Opened event is not yet collected."""
    state, route_owner = ROUTES[route]
    return RefundCase(refund_id=refund_id, route=route, state=state, deadline=DEADLINE, route_owner=route_owner,
                      rules_version="2021-09.1", third_party_payer=False, reference={"request_id": refund_id},
                      origin=origin("refund.requested"), **FACTS)


def new_case(route: str = "BANK") -> RefundCase:
    case = open_case(route)
    case.collect_events()
    return case


def ordered_case(route: str = "BANK") -> RefundCase:
    case = new_case(route)
    case.order(at=HELD_AT, origin=origin("ledger.balance.held", source="payments"))
    case.collect_events()
    return case


def completed_case(route: str = "BANK", bank_reference: str = "BR-1") -> RefundCase:
    case = ordered_case(route)
    case.complete(bank_reference=bank_reference, amount=10000, iban=IBAN_OWN, completed_at=BEFORE_DEADLINE,
                  origin=origin("refund.completed"))
    case.collect_events()
    return case


def failed_case(route: str = "BANK", bank_reference: str = "BR-F1") -> RefundCase:
    case = ordered_case(route)
    case.fail(bank_reference=bank_reference, reason="account closed", failed_at=BEFORE_DEADLINE,
              origin=origin("refund.failed"))
    case.collect_events()
    return case


def rejected_case(route: str = "BANK") -> RefundCase:
    case = new_case(route)
    case.reject(rule="insufficient_balance", reason="only 5000 halalas available", at=HELD_AT,
                decided_by="payments", origin=origin("ledger.balance.hold_refused", source="payments"))
    case.collect_events()
    return case


CLOSED: dict[str, Callable[[], RefundCase]] = {
    "REJECTED": rejected_case, "COMPLETED": completed_case, "FAILED": failed_case}


# --- opening -----------------------------------------------------------------------------------------------------

def test_refund_case_ids_are_deterministic_from_the_refund_id():
    assert RefundCase.create_id("RR-1") == RefundCase.create_id("RR-1")
    assert RefundCase.create_id("RR-1") != RefundCase.create_id("RR-2")
    assert open_case(refund_id="RR-1").id == RefundCase.create_id("RR-1")
    assert len({RefundCase.create_id("RR-1"), ParkedReturn.create_id("RR-1"), PaymentRef.create_id("RR-1")}) == 3


def test_opening_a_case_emits_opened_with_its_facts_route_and_deadline():
    case = open_case("BANK")
    [opened] = case.collect_events()
    assert isinstance(opened, RefundCase.Opened)
    assert (opened.refund_id, opened.route, opened.state, opened.deadline, opened.route_owner) == (
        "RR-1", "BANK", "AWAITING_HOLD", DEADLINE, "BANK")
    assert (opened.amount, opened.iban, opened.requested_at) == (10000, IBAN_OWN, REQUESTED_AT)
    assert (case.overdue, case.bank_reference, case.closed_at) == (False, None, None)


# --- ordering ----------------------------------------------------------------------------------------------------

def test_ordering_a_held_bank_request_emits_ordered_with_route_deadline_amount_and_iban():
    case = new_case("BANK")
    case.order(at=HELD_AT, origin=origin("ledger.balance.held", source="payments"))
    [ordered] = case.collect_events()
    assert isinstance(ordered, RefundCase.Ordered)
    assert (ordered.refund_id, ordered.beneficiary_id, ordered.route, ordered.deadline) == (
        "RR-1", "1012345672", "BANK", DEADLINE)
    assert (ordered.amount, ordered.iban, ordered.ordered_at) == (10000, IBAN_OWN, HELD_AT)
    assert ordered.decided_by is None
    assert ordered.origin == origin("ledger.balance.held", source="payments")
    assert (case.state, case.awaits_bank) == ("ORDERED", True)


def test_a_case_is_ordered_once_and_a_second_order_changes_nothing():
    case = new_case("BANK")
    case.order(at=HELD_AT, origin=origin("ledger.balance.held", "evt-1", source="payments"))
    case.order(at=HELD_AT + timedelta(hours=1), origin=origin("ledger.balance.held", "evt-2", source="payments"))
    events = case.collect_events()
    assert [type(e) for e in events] == [RefundCase.Ordered]
    assert events[0].ordered_at == HELD_AT
    assert case.state == "ORDERED"


def test_ordering_records_the_employee_who_approved_it():
    case = new_case("JAWAZAT")
    decided_at = datetime(2026, 11, 3, 11, 15, tzinfo=RIYADH)
    case.order(at=decided_at, origin=origin("refund.approved", source="absher"), decided_by="jawazat:emp-42")
    [ordered] = case.collect_events()
    assert (ordered.decided_by, ordered.ordered_at, ordered.route) == ("jawazat:emp-42", decided_at, "JAWAZAT")


def test_an_accepted_visa_refund_is_ordered_at_once():
    case = new_case("AUTOMATIC")
    accepted_at = datetime(2026, 11, 2, 10, 0, tzinfo=RIYADH)
    case.order(at=accepted_at, origin=origin("ledger.visa.refund_started", source="visas"))
    [ordered] = case.collect_events()
    assert (ordered.route, ordered.ordered_at, ordered.amount, ordered.iban) == (
        "AUTOMATIC", accepted_at, 10000, IBAN_OWN)
    assert (case.state, case.next_step_owner) == ("ORDERED", "BANK")


@pytest.mark.parametrize("closed", sorted(CLOSED))
def test_a_closed_case_is_never_ordered(closed: str):
    case = CLOSED[closed]()
    case.order(at=HELD_AT, origin=origin("ledger.balance.held", source="payments"))
    assert case.collect_events() == []
    assert case.state == closed


# --- rejecting ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("route", "state"), [("BANK", "AWAITING_HOLD"), ("JAWAZAT", "JAWAZAT_QUEUE"),
                                              ("MANUAL_REVIEW", "MANUAL_REVIEW")])
def test_rejecting_a_waiting_case_closes_it_with_rule_reason_and_decider(route: str, state: str):
    case = new_case(route)
    assert case.state == state
    at = datetime(2026, 11, 3, 12, 0, tzinfo=RIYADH)
    case.reject(rule="declined", reason="balance already refunded", at=at, decided_by="emp-7",
                origin=origin("refund.declined"))
    [rejected] = case.collect_events()
    assert isinstance(rejected, RefundCase.Rejected)
    assert (rejected.refund_id, rejected.rule, rejected.reason, rejected.decided_by, rejected.rejected_at) == (
        "RR-1", "declined", "balance already refunded", "emp-7", at)
    assert (case.state, case.open, case.closed_at, case.next_step_owner) == ("REJECTED", False, at, None)


def test_rejecting_an_ordered_case_changes_nothing():
    case = ordered_case("JAWAZAT")
    case.reject(rule="declined_by_jawazat", reason="late decline", at=HELD_AT, decided_by="emp-7",
                origin=origin("refund.declined"))
    assert case.collect_events() == []
    assert (case.state, case.closed_at) == ("ORDERED", None)


@pytest.mark.parametrize("closed", sorted(CLOSED))
def test_rejecting_a_closed_case_changes_nothing(closed: str):
    case = CLOSED[closed]()
    closed_at = case.closed_at
    case.reject(rule="declined", reason="again", at=AFTER_DEADLINE, decided_by="emp-8",
                origin=origin("refund.declined", "evt-9"))
    assert case.collect_events() == []
    assert (case.state, case.closed_at) == (closed, closed_at)


# --- the bank's answer -------------------------------------------------------------------------------------------

def test_a_bank_completion_closes_the_ordered_case_with_its_reference():
    case = ordered_case()
    paid_at = datetime(2026, 11, 4, 14, 0, tzinfo=RIYADH)
    case.complete(bank_reference="BR-1", amount=10000, iban=IBAN_OWN, completed_at=paid_at,
                  origin=origin("refund.completed"))
    [completed] = case.collect_events()
    assert isinstance(completed, RefundCase.Completed)
    assert (completed.refund_id, completed.bank_reference, completed.amount, completed.completed_at) == (
        "RR-1", "BR-1", 10000, paid_at)
    assert completed.on_time is True
    assert (case.state, case.open, case.bank_reference, case.closed_at) == ("COMPLETED", False, "BR-1", paid_at)


@pytest.mark.parametrize(("completed_at", "on_time"), [
    (BEFORE_DEADLINE, True),
    (DEADLINE, True),
    (DEADLINE.astimezone(UTC), True),     # the same instant, told in another zone
    (AFTER_DEADLINE, False),
    (AFTER_DEADLINE.astimezone(UTC), False),
])
def test_a_completion_is_on_time_up_to_and_including_the_deadline_instant(completed_at: datetime, on_time: bool):
    case = ordered_case()
    case.complete(bank_reference="BR-1", amount=10000, iban=IBAN_OWN, completed_at=completed_at,
                  origin=origin("refund.completed"))
    [completed] = case.collect_events()
    assert completed.on_time is on_time


@pytest.mark.parametrize("route", ["BANK", "JAWAZAT", "MANUAL_REVIEW"])
def test_a_case_not_yet_ordered_cannot_be_completed_or_failed(route: str):
    case = new_case(route)
    state = case.state
    with pytest.raises(AlreadyClosed, match="not awaiting the bank"):
        case.complete(bank_reference="BR-1", amount=10000, iban=IBAN_OWN, completed_at=HELD_AT,
                      origin=origin("refund.completed"))
    with pytest.raises(AlreadyClosed, match="not awaiting the bank"):
        case.fail(bank_reference="BR-F1", reason="account closed", failed_at=HELD_AT, origin=origin("refund.failed"))
    assert case.collect_events() == []
    assert case.state == state


@pytest.mark.parametrize(("amount", "iban"), [(10001, IBAN_OWN), (9999, IBAN_OWN), (10000, IBAN_OTHER)])
def test_a_return_that_differs_from_the_order_is_a_mismatch_and_changes_nothing(amount: int, iban: str):
    case = ordered_case()
    with pytest.raises(ReturnMismatch) as raised:
        case.complete(bank_reference="BR-1", amount=amount, iban=iban, completed_at=HELD_AT,
                      origin=origin("refund.completed"))
    assert IBAN_OWN not in str(raised.value) and IBAN_OWN[-4:] in str(raised.value)   # accounts shown masked
    assert case.collect_events() == []
    assert (case.state, case.bank_reference) == ("ORDERED", None)


def test_the_same_bank_completion_twice_is_applied_once():
    case = ordered_case()
    for event_id in ("evt-1", "evt-2"):
        case.complete(bank_reference="BR-1", amount=10000, iban=IBAN_OWN, completed_at=BEFORE_DEADLINE,
                      origin=origin("refund.completed", event_id))
    assert [type(e) for e in case.collect_events()] == [RefundCase.Completed]
    assert case.state == "COMPLETED"


def test_a_different_bank_answer_after_completion_raises_already_closed():
    case = completed_case(bank_reference="BR-1")
    with pytest.raises(AlreadyClosed, match="completed"):
        case.complete(bank_reference="BR-2", amount=10000, iban=IBAN_OWN, completed_at=AFTER_DEADLINE,
                      origin=origin("refund.completed", "evt-2"))
    assert case.collect_events() == []
    assert (case.state, case.bank_reference, case.closed_at) == ("COMPLETED", "BR-1", BEFORE_DEADLINE)


def test_a_bank_failure_closes_the_ordered_case_with_its_reason():
    case = ordered_case()
    failed_at = datetime(2026, 11, 4, 8, 0, tzinfo=RIYADH)
    case.fail(bank_reference="BR-F1", reason="account closed", failed_at=failed_at, origin=origin("refund.failed"))
    [failed] = case.collect_events()
    assert isinstance(failed, RefundCase.Failed)
    assert (failed.refund_id, failed.bank_reference, failed.reason, failed.failed_at) == (
        "RR-1", "BR-F1", "account closed", failed_at)
    assert (case.state, case.open, case.bank_reference, case.closed_at) == ("FAILED", False, "BR-F1", failed_at)


def test_the_same_bank_failure_twice_is_applied_once():
    case = ordered_case()
    for event_id in ("evt-1", "evt-2"):
        case.fail(bank_reference="BR-F1", reason="account closed", failed_at=BEFORE_DEADLINE,
                  origin=origin("refund.failed", event_id))
    assert [type(e) for e in case.collect_events()] == [RefundCase.Failed]


@pytest.mark.parametrize("bank_reference", ["BR-1", "BR-F1"])
def test_a_failure_after_completion_raises_already_closed(bank_reference: str):
    case = completed_case(bank_reference="BR-1")
    with pytest.raises(AlreadyClosed, match="completed"):
        case.fail(bank_reference=bank_reference, reason="account closed", failed_at=AFTER_DEADLINE,
                  origin=origin("refund.failed"))
    assert case.collect_events() == []
    assert (case.state, case.bank_reference) == ("COMPLETED", "BR-1")


def test_a_failure_with_another_reference_after_failure_raises_already_closed():
    case = failed_case(bank_reference="BR-F1")
    with pytest.raises(AlreadyClosed, match="failed"):
        case.fail(bank_reference="BR-F2", reason="account frozen", failed_at=AFTER_DEADLINE,
                  origin=origin("refund.failed", "evt-2"))
    assert case.collect_events() == []


def test_a_completion_after_failure_raises_already_closed():
    case = failed_case(bank_reference="BR-F1")
    with pytest.raises(AlreadyClosed, match="failed"):
        case.complete(bank_reference="BR-1", amount=10000, iban=IBAN_OWN, completed_at=AFTER_DEADLINE,
                      origin=origin("refund.completed"))
    assert case.collect_events() == []
    assert (case.state, case.bank_reference) == ("FAILED", "BR-F1")


# --- a repeated request ------------------------------------------------------------------------------------------

def test_the_same_request_facts_again_pass_and_change_nothing():
    case = new_case()
    case.check_same_request(**FACTS)
    case.check_same_request(**{**FACTS, "requested_at": REQUESTED_AT.astimezone(UTC)})   # same instant
    assert case.collect_events() == []


@pytest.mark.parametrize(("field", "value"), [
    ("beneficiary_id", "2098765437"),
    ("agency", "MOI"),
    ("service_code", "IQAMA_RENEWAL"),
    ("amount", 10001),
    ("iban", IBAN_OTHER),
    ("channel", "ABSHER"),
    ("requested_at", REQUESTED_AT + timedelta(seconds=1)),
])
def test_a_request_id_reused_with_a_different_fact_is_a_conflict_naming_the_field(field: str, value: Any):
    case = new_case()
    with pytest.raises(RefundConflict, match=field):
        case.check_same_request(**{**FACTS, field: value})


def test_a_conflict_names_every_differing_field():
    case = new_case()
    with pytest.raises(RefundConflict, match="amount, iban"):
        case.check_same_request(**{**FACTS, "iban": IBAN_OTHER, "amount": 1})


# --- staff decisions ---------------------------------------------------------------------------------------------

def test_a_case_in_the_jawazat_queue_awaits_a_jawazat_decision():
    new_case("JAWAZAT").check_awaits_decision("JAWAZAT_QUEUE")


def test_a_bank_request_awaiting_its_hold_is_not_in_the_jawazat_queue():
    case = new_case("BANK")
    with pytest.raises(NotAwaitingDecision, match="awaiting_hold"):
        case.check_awaits_decision("JAWAZAT_QUEUE")


@pytest.mark.parametrize("decided", [ordered_case, rejected_case])
def test_a_repeated_jawazat_decision_passes_the_check_and_changes_nothing(decided: Callable[[str], RefundCase]):
    case = decided("JAWAZAT")
    case.check_awaits_decision("JAWAZAT_QUEUE")
    case.order(at=HELD_AT, origin=origin("refund.approved", "evt-2"), decided_by="emp-42")
    case.reject(rule="declined_by_jawazat", reason="again", at=HELD_AT, decided_by="emp-42",
                origin=origin("refund.declined", "evt-3"))
    assert case.collect_events() == []


@pytest.mark.parametrize("answered", [completed_case, failed_case])
def test_a_repeated_jawazat_approval_after_the_bank_answered_changes_nothing(
        answered: Callable[[str], RefundCase]):
    # A repeat is tolerated while the case is ORDERED (previous test); it must stay a no-op once the bank has
    # answered, not turn into a not_awaiting_decision rejection (README: rejected only for another queue).
    case = answered("JAWAZAT")
    case.check_awaits_decision("JAWAZAT_QUEUE")
    case.order(at=AFTER_DEADLINE, origin=origin("refund.approved", "evt-2"), decided_by="emp-42")
    assert case.collect_events() == []


def test_an_ordered_bank_request_was_never_in_the_jawazat_queue():
    with pytest.raises(NotAwaitingDecision):
        ordered_case("BANK").check_awaits_decision("JAWAZAT_QUEUE")


def test_a_manual_review_case_awaits_mofa_not_jawazat():
    case = new_case("MANUAL_REVIEW")
    case.check_awaits_decision("MANUAL_REVIEW")
    with pytest.raises(NotAwaitingDecision):
        case.check_awaits_decision("JAWAZAT_QUEUE")


# --- overdue -----------------------------------------------------------------------------------------------------

def test_a_case_is_not_overdue_before_its_deadline():
    case = ordered_case()
    case.mark_overdue(at=BEFORE_DEADLINE)
    assert case.collect_events() == []
    assert case.overdue is False


def test_a_case_is_marked_overdue_once_from_its_deadline_instant():
    case = ordered_case()
    case.mark_overdue(at=DEADLINE)
    case.mark_overdue(at=DEADLINE + timedelta(days=1))
    events = case.collect_events()
    assert [type(e) for e in events] == [RefundCase.Overdue]
    overdue = events[0]
    assert (overdue.refund_id, overdue.beneficiary_id, overdue.agency, overdue.route, overdue.state) == (
        "RR-1", "1012345672", "JAWAZAT", "BANK", "ORDERED")
    assert (overdue.deadline, overdue.marked_at) == (DEADLINE, DEADLINE)
    assert case.overdue is True
    assert case.open is True   # overdue is a flag on an open case, not a closing state


def test_a_case_is_marked_overdue_when_checked_after_its_deadline():
    case = new_case("JAWAZAT")
    later = AFTER_DEADLINE.astimezone(UTC)
    case.mark_overdue(at=later)
    [overdue] = case.collect_events()
    assert overdue.marked_at == later


@pytest.mark.parametrize("closed", sorted(CLOSED))
def test_a_closed_case_is_never_overdue(closed: str):
    case = CLOSED[closed]()
    case.mark_overdue(at=DEADLINE + timedelta(days=30))
    assert case.collect_events() == []
    assert case.overdue is False


@pytest.mark.parametrize(("build", "route", "owner"), [
    (ordered_case, "BANK", "BANK"),
    (ordered_case, "JAWAZAT", "BANK"),
    (new_case, "JAWAZAT", "JAWAZAT"),
    (new_case, "BANK", "MOF"),
    (new_case, "MANUAL_REVIEW", "MOFA"),
])
def test_the_overdue_event_names_the_agency_owning_the_next_step(
        build: Callable[[str], RefundCase], route: str, owner: str):
    case = build(route)
    case.mark_overdue(at=DEADLINE)
    [overdue] = case.collect_events()
    assert overdue.owner == owner == case.next_step_owner


def test_a_late_completion_of_an_overdue_case_is_not_on_time():
    case = ordered_case()
    case.mark_overdue(at=DEADLINE)
    case.complete(bank_reference="BR-1", amount=10000, iban=IBAN_OWN, completed_at=AFTER_DEADLINE,
                  origin=origin("refund.completed"))
    events = case.collect_events()
    assert [type(e) for e in events] == [RefundCase.Overdue, RefundCase.Completed]
    assert events[1].on_time is False
    case.mark_overdue(at=AFTER_DEADLINE)
    assert case.collect_events() == []


# --- who owns the next step --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("build", "route", "state", "is_open", "owner"), [
    (new_case, "BANK", "AWAITING_HOLD", True, "MOF"),
    (new_case, "JAWAZAT", "JAWAZAT_QUEUE", True, "JAWAZAT"),
    (new_case, "MANUAL_REVIEW", "MANUAL_REVIEW", True, "MOFA"),
    (ordered_case, "BANK", "ORDERED", True, "BANK"),
    (ordered_case, "AUTOMATIC", "ORDERED", True, "BANK"),
    (rejected_case, "BANK", "REJECTED", False, None),
    (completed_case, "BANK", "COMPLETED", False, None),
    (failed_case, "BANK", "FAILED", False, None),
])
def test_each_state_says_whether_the_case_is_open_and_who_owns_the_next_step(
        build: Callable[[str], RefundCase], route: str, state: str, is_open: bool, owner: str | None):
    case = build(route)
    assert (case.state, case.open, case.next_step_owner) == (state, is_open, owner)


# --- parked bank answers -----------------------------------------------------------------------------------------

def parked_return() -> ParkedReturn:
    parked = ParkedReturn(refund_id="RR-1", outcome="completed",
                          facts={"bank_reference": "BR-1", "amount": 10000, "iban": IBAN_OWN,
                                 "completed_at": BEFORE_DEADLINE.isoformat()},
                          origin=origin("refund.completed"))
    return parked


def test_parking_a_bank_answer_emits_parked_with_its_facts():
    parked = parked_return()
    [event] = parked.collect_events()
    assert isinstance(event, ParkedReturn.Parked)
    assert (event.refund_id, event.outcome, event.facts["bank_reference"]) == ("RR-1", "completed", "BR-1")
    assert parked.id == ParkedReturn.create_id("RR-1")
    assert parked.applied is False


def test_a_parked_answer_is_applied_once():
    parked = parked_return()
    parked.collect_events()
    parked.mark_applied()
    parked.mark_applied()
    assert [type(e) for e in parked.collect_events()] == [ParkedReturn.Applied]
    assert parked.applied is True


def test_discarding_a_parked_answer_records_the_reason_once():
    parked = parked_return()
    parked.collect_events()
    parked.discard(reason="return_mismatch: amount differs")
    parked.discard(reason="return_mismatch: again")
    events = parked.collect_events()
    assert [type(e) for e in events] == [ParkedReturn.Discarded]
    assert (events[0].refund_id, events[0].reason) == ("RR-1", "return_mismatch: amount differs")


def test_an_applied_answer_is_never_discarded():
    parked = parked_return()
    parked.collect_events()
    parked.mark_applied()
    parked.discard(reason="too late")
    assert [type(e) for e in parked.collect_events()] == [ParkedReturn.Applied]


def test_a_discarded_answer_is_never_applied():
    parked = parked_return()
    parked.collect_events()
    parked.discard(reason="return_mismatch: amount differs")
    parked.mark_applied()
    assert [type(e) for e in parked.collect_events()] == [ParkedReturn.Discarded]


# --- payments known to the refunds service -----------------------------------------------------------------------

def waiting_refund(refund_id: str) -> dict[str, Any]:
    return {"refund_id": refund_id, "sponsor_id": "1012345672", "amount": 200000, "route": "AUTOMATIC"}


def test_a_refund_waits_for_its_payment_once_per_refund_id():
    ref = PaymentRef(payment_id="PAY-1")
    ref.wait(waiting_refund("V-1"))
    ref.wait(waiting_refund("V-1"))
    ref.wait(waiting_refund("V-2"))
    events = ref.collect_events()
    assert [type(e) for e in events] == [PaymentRef.Noted, PaymentRef.RefundWaiting, PaymentRef.RefundWaiting]
    assert [e.refund["refund_id"] for e in events[1:]] == ["V-1", "V-2"]
    assert [p["refund_id"] for p in ref.pending] == ["V-1", "V-2"]
    assert ref.known is False


def test_recording_the_payment_hands_back_the_waiting_refunds_once():
    ref = PaymentRef(payment_id="PAY-1")
    ref.wait(waiting_refund("V-1"))
    ref.wait(waiting_refund("V-2"))
    ref.collect_events()
    waiting = ref.record(payer_iban=IBAN_OWN, payer_id="1012345672")
    assert [w["refund_id"] for w in waiting] == ["V-1", "V-2"]
    [recorded] = ref.collect_events()
    assert isinstance(recorded, PaymentRef.Recorded)
    assert (recorded.payment_id, recorded.payer_iban, recorded.payer_id) == ("PAY-1", IBAN_OWN, "1012345672")
    assert (ref.known, ref.pending) == (True, [])

    assert ref.record(payer_iban=IBAN_OTHER, payer_id="2098765437") == []
    assert ref.collect_events() == []
    assert (ref.payer_iban, ref.payer_id) == (IBAN_OWN, "1012345672")


def test_a_payment_recorded_before_any_refund_waits_hands_back_nothing():
    ref = PaymentRef(payment_id="PAY-1")
    assert ref.record(payer_iban=IBAN_OWN, payer_id="1012345672") == []
    assert [type(e) for e in ref.collect_events()] == [PaymentRef.Noted, PaymentRef.Recorded]
    assert ref.id == PaymentRef.create_id("PAY-1")


# --- visa refund ids ---------------------------------------------------------------------------------------------

def test_a_visa_refund_id_is_deterministic_from_the_visa_key():
    key = ("1012345672", "1448001238", "3")
    assert visa_refund_id(*key) == visa_refund_id(*key)
    assert re.fullmatch(r"V-[0-9A-F]{16}", visa_refund_id(*key))
    assert not any(part in visa_refund_id(*key) for part in key[:2]), "the sponsor's ID is not disclosed"
    assert visa_refund_id("1012345672", "1448001238", "4") != visa_refund_id(*key)
    assert visa_refund_id("1012345680", "1448001238", "3") != visa_refund_id(*key)
    assert visa_refund_id("1012345672", "1448001246", "3") != visa_refund_id(*key)
    assert RefundCase.create_id(visa_refund_id(*key)) == RefundCase.create_id(visa_refund_id(*key))


def test_only_the_bank_holding_the_account_may_answer_for_a_refund():
    case = ordered_case()
    case.check_answering_bank(f"bank/{case.iban[4:6]}")
    with pytest.raises(WrongBank):
        case.check_answering_bank("bank/20")
