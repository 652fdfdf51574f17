"""Visas domain rules (journey B), asserted on the events a visa emits. No I/O."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from services.kit.rules import Rules
from services.visas.domain import (
    CancellationAcceptanceConflict,
    CancellationRequestConflict,
    IssueConflict,
    Visa,
    VisasError,
    route_cancellation,
)

RULES = Rules.from_dict({
    "version": "2021-09.1",
    "automatic_cancellation_window_hours": 72,
    "unreflected_payment_after_hours": 24,
    "covid_window": {"from": "2020-03-01", "to": "2022-03-31"},
    "refundable_visa_types": ["DOMESTIC_WORKER", "WORK", "FAMILY"],
    "non_refundable_visa_types": ["VISIT"],
    "routes": {"AUTOMATIC": {"owner": "MUSANED", "deadline": {"business_days": 3}},
               "MOFA": {"owner": "MOFA", "deadline": {"calendar_days": 15}},
               "MANUAL_REVIEW": {"owner": "MOFA", "deadline": {"calendar_days": 15}}},
    "calendar": {"timezone": "Asia/Riyadh", "weekend": ["FRIDAY", "SATURDAY"]},
})
UTC = timezone.utc
RIYADH = timezone(timedelta(hours=3))
ISSUED_AT = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
KEY = {"sponsor_id": "1012345672", "export_number": "1448001238", "serial_number": "3"}
ISSUE = {"visa_type": "DOMESTIC_WORKER", "payment_id": "SADAD-20261101-0004790", "fee": 200000,
         "issued_at": ISSUED_AT}


def origin(event_type: str, event_id: str = "evt-1") -> dict[str, str]:
    return {"source": "musaned", "id": event_id, "type": event_type}


def new_visa() -> Visa:
    visa = Visa(**KEY)
    visa.collect_events()
    return visa


def issue(visa: Visa, **changes) -> None:
    visa.issue(**{**ISSUE, **changes}, origin=origin("visa.issued"), rules=RULES)


def request(visa: Visa, at: datetime, channel: str = "MUSANED") -> None:
    visa.request_cancellation(requested_at=at, channel=channel, origin=origin("visa.cancellation_requested"),
                              rules=RULES)


def accept(visa: Visa, at: datetime) -> None:
    visa.accept_cancellation(accepted_at=at, origin=origin("visa.cancellation_accepted"))


def kinds(visa: Visa) -> list[str]:
    return [type(e).__name__ for e in visa.collect_events()]


def routed_after(elapsed: timedelta, **issue_changes) -> Visa.CancellationRouted:
    visa = new_visa()
    issue(visa, **issue_changes)
    request(visa, issue_changes.get("issued_at", ISSUED_AT) + elapsed)
    [routed] = [e for e in visa.collect_events() if isinstance(e, Visa.CancellationRouted)]
    return routed


def test_visa_ids_are_deterministic_from_sponsor_export_and_serial():
    assert Visa(**KEY).id == Visa.create_id(**KEY)
    assert Visa.create_id("1012345672", "1448001238", "3") != Visa.create_id("1012345672", "1448001238", "4")
    assert Visa.create_id("1012345672", "1448001238", "3") != Visa.create_id("2012345670", "1448001238", "3")


def test_issuing_records_the_fee_and_the_payment_that_paid_it():
    visa = Visa(**KEY)
    issue(visa)
    opened, issued = visa.collect_events()
    assert isinstance(opened, Visa.Opened) and isinstance(issued, Visa.Issued)
    assert (issued.key, issued.payment_id, issued.fee, issued.issued_at) == (
        KEY, "SADAD-20261101-0004790", 200000, ISSUED_AT)
    assert visa.waiting_for == []


def test_a_request_one_second_before_72_hours_is_refunded_automatically():
    routed = routed_after(timedelta(hours=71, minutes=59, seconds=59))
    assert (routed.route, routed.rule, routed.rules_version) == ("AUTOMATIC", "within_window", "2021-09.1")
    assert (routed.seconds_since_issue, routed.hours_since_issue) == (259199, 71.99)
    assert "71:59:59" in routed.reason and "automatically" in routed.reason


def test_a_request_exactly_72_hours_after_issue_goes_to_mofa():
    routed = routed_after(timedelta(hours=72))
    assert (routed.route, routed.rule) == ("MOFA", "after_window")
    assert (routed.seconds_since_issue, routed.hours_since_issue) == (259200, 72.0)
    assert "72:00:00" in routed.reason and "MoFA" in routed.reason


def test_the_window_comes_from_the_rules_and_the_decision_records_their_version():
    stricter = replace(RULES, version="test-48h", automatic_cancellation_window=timedelta(hours=48))
    decision = route_cancellation(visa_type="WORK", issued_at=ISSUED_AT, requested_at=ISSUED_AT + timedelta(hours=50),
                                  rules=stricter)
    assert (decision.route, decision.rules_version) == ("MOFA", "test-48h")


def test_a_visit_visa_is_routed_non_refundable_and_its_acceptance_closes_the_case_without_a_refund():
    visa = new_visa()
    issue(visa, visa_type="VISIT", fee=30000)
    request(visa, ISSUED_AT + timedelta(hours=1))
    accept(visa, ISSUED_AT + timedelta(hours=2))
    events = visa.collect_events()
    assert [type(e).__name__ for e in events] == ["Issued", "CancellationRequested", "CancellationRouted",
                                                  "CancellationAccepted", "ClosedNonRefundable"]
    routed, closed = events[2], events[4]
    assert (routed.route, routed.rule) == ("NON_REFUNDABLE", "non_refundable_type")
    assert (closed.route, closed.reason, closed.fee) == ("NON_REFUNDABLE", "VISIT visas are non-refundable", 30000)
    assert closed.accepted_at == ISSUED_AT + timedelta(hours=2)
    assert visa.outcome == "CLOSED_NON_REFUNDABLE"


@pytest.mark.parametrize(("issued_at", "route"), [
    pytest.param(datetime(2020, 2, 29, 23, 59, 59, tzinfo=RIYADH), "AUTOMATIC", id="the-day-before-in-riyadh"),
    pytest.param(datetime(2020, 2, 29, 21, 0, 0, tzinfo=UTC), "MANUAL_REVIEW", id="first-day-00:00-riyadh"),
    pytest.param(datetime(2022, 3, 31, 23, 59, 59, tzinfo=RIYADH), "MANUAL_REVIEW", id="last-day-23:59:59-riyadh"),
    pytest.param(datetime(2022, 3, 31, 21, 0, 0, tzinfo=UTC), "AUTOMATIC", id="the-day-after-in-riyadh"),
])
def test_the_covid_window_is_inclusive_and_counted_in_riyadh_dates(issued_at, route):
    routed = routed_after(timedelta(hours=1), issued_at=issued_at.astimezone(UTC))
    assert routed.route == route
    if route == "MANUAL_REVIEW":
        assert routed.rule == "covid_window" and "COVID-19" in routed.reason and "Asia/Riyadh" in routed.reason


def test_a_covid_window_visit_visa_is_still_non_refundable():
    assert routed_after(timedelta(hours=1), visa_type="VISIT",
                        issued_at=datetime(2021, 6, 1, tzinfo=UTC)).route == "NON_REFUNDABLE"


def test_a_visa_type_the_rules_do_not_list_goes_to_manual_review_with_the_reason():
    visa = new_visa()
    issue(visa, visa_type="HAJJ_UMRAH")
    request(visa, ISSUED_AT + timedelta(hours=1))
    accept(visa, ISSUED_AT + timedelta(hours=3))
    events = visa.collect_events()
    routed, started = events[2], events[4]
    assert (routed.route, routed.rule) == ("MANUAL_REVIEW", "unknown_visa_type")
    assert "HAJJ_UMRAH" in routed.reason and "2021-09.1" in routed.reason
    assert isinstance(started, Visa.RefundStarted) and started.route == "MANUAL_REVIEW"


def test_a_request_dated_before_the_issue_goes_to_manual_review():
    routed = routed_after(-timedelta(minutes=5))
    assert (routed.route, routed.rule) == ("MANUAL_REVIEW", "requested_before_issue")
    assert routed.seconds_since_issue == -300 and "0:05:00 before" in routed.reason


def test_a_cancellation_before_the_issue_waits_and_is_routed_when_the_visa_arrives():
    visa = Visa(**KEY)
    request(visa, ISSUED_AT + timedelta(hours=80))
    events = visa.collect_events()
    assert [type(e).__name__ for e in events] == ["Opened", "CancellationRequested"]
    assert events[1].issued_at is None
    assert visa.routing is None
    assert visa.waiting_for == ["visa.issued", "visa.cancellation_accepted"]
    issue(visa)
    events = visa.collect_events()
    assert [type(e).__name__ for e in events] == ["Issued", "CancellationRouted"]
    assert (events[1].route, events[1].hours_since_issue, events[1].origin["type"]) == ("MOFA", 80.0, "visa.issued")


def test_an_acceptance_before_the_request_is_kept_and_the_refund_starts_with_the_request():
    visa = new_visa()
    issue(visa)
    accept(visa, ISSUED_AT + timedelta(hours=30))
    assert kinds(visa) == ["Issued", "CancellationAccepted"]
    assert visa.waiting_for == ["visa.cancellation_requested"]
    request(visa, ISSUED_AT + timedelta(hours=24), channel="ABSHER")
    events = visa.collect_events()
    assert [type(e).__name__ for e in events] == ["CancellationRequested", "CancellationRouted", "RefundStarted"]
    started = events[2]
    assert (started.key, started.payment_id, started.fee, started.route, started.rules_version) == (
        KEY, "SADAD-20261101-0004790", 200000, "AUTOMATIC", "2021-09.1")
    assert (started.requested_at, started.accepted_at, started.channel) == (
        ISSUED_AT + timedelta(hours=24), ISSUED_AT + timedelta(hours=30), "ABSHER")
    assert (started.issued_at, started.visa_type, started.hours_since_issue) == (ISSUED_AT, "DOMESTIC_WORKER", 24.0)
    assert visa.outcome == "REFUND_STARTED" and visa.waiting_for == []


def test_acceptance_and_request_before_the_issue_start_the_refund_when_the_visa_arrives():
    visa = Visa(**KEY)
    accept(visa, ISSUED_AT + timedelta(hours=5))
    request(visa, ISSUED_AT + timedelta(hours=4))
    assert kinds(visa) == ["Opened", "CancellationAccepted", "CancellationRequested"]
    assert visa.waiting_for == ["visa.issued"]
    issue(visa)
    assert kinds(visa) == ["Issued", "CancellationRouted", "RefundStarted"]


def test_the_refund_starts_once_and_only_at_acceptance():
    visa = new_visa()
    issue(visa)
    request(visa, ISSUED_AT + timedelta(hours=1))
    assert kinds(visa) == ["Issued", "CancellationRequested", "CancellationRouted"]
    accept(visa, ISSUED_AT + timedelta(hours=2))
    accept(visa, ISSUED_AT + timedelta(hours=2))
    request(visa, ISSUED_AT + timedelta(hours=1))
    issue(visa)
    assert kinds(visa) == ["CancellationAccepted", "RefundStarted"]


def test_the_same_facts_again_change_nothing():
    visa = new_visa()
    issue(visa)
    request(visa, ISSUED_AT + timedelta(hours=1))
    visa.change_status(status="CANCELLED", changed_at=ISSUED_AT + timedelta(hours=3), origin=origin("s"))
    visa.collect_events()
    issue(visa)
    request(visa, ISSUED_AT + timedelta(hours=1))
    visa.change_status(status="CANCELLED", changed_at=ISSUED_AT + timedelta(hours=3), origin=origin("s", "evt-2"))
    assert visa.collect_events() == []


def test_rejects_a_second_issue_with_another_fee_and_names_what_differs():
    visa = new_visa()
    issue(visa)
    visa.collect_events()
    with pytest.raises(IssueConflict, match="fee") as raised:
        issue(visa, fee=250000)
    assert raised.value.reason_code == "visa_issue_conflict" and isinstance(raised.value, VisasError)
    with pytest.raises(IssueConflict, match="issued_at, payment_id"):
        issue(visa, payment_id="OTHER", issued_at=ISSUED_AT + timedelta(seconds=1))
    assert visa.fee == 200000 and visa.collect_events() == []


def test_rejects_a_second_request_or_acceptance_with_other_facts():
    visa = new_visa()
    request(visa, ISSUED_AT + timedelta(hours=1))
    accept(visa, ISSUED_AT + timedelta(hours=2))
    with pytest.raises(CancellationRequestConflict) as raised:
        request(visa, ISSUED_AT + timedelta(hours=1), channel="ABSHER")
    assert raised.value.reason_code == "cancellation_request_conflict"
    with pytest.raises(CancellationAcceptanceConflict) as raised_accept:
        accept(visa, ISSUED_AT + timedelta(hours=9))
    assert raised_accept.value.reason_code == "cancellation_acceptance_conflict"


def test_statuses_are_recorded_once_each_and_the_latest_is_current_even_when_one_arrives_late():
    visa = new_visa()
    issue(visa)
    visa.collect_events()
    restored, cancelled = ISSUED_AT + timedelta(days=3), ISSUED_AT + timedelta(days=1)
    visa.change_status(status="FEES_RESTORED", changed_at=restored, origin=origin("visa.status_changed"))
    visa.change_status(status="CANCELLED", changed_at=cancelled, origin=origin("visa.status_changed", "e2"))
    events = visa.collect_events()
    assert [(e.status, e.changed_at, e.payment_id) for e in events] == [
        ("FEES_RESTORED", restored, "SADAD-20261101-0004790"), ("CANCELLED", cancelled, "SADAD-20261101-0004790")]
    assert (visa.status, visa.status_changed_at) == ("FEES_RESTORED", restored)


def test_a_status_before_the_issue_is_kept():
    visa = Visa(**KEY)
    visa.change_status(status="FEES_RESTORED", changed_at=ISSUED_AT, origin=origin("visa.status_changed"))
    _, changed = visa.collect_events()
    assert (changed.status, changed.payment_id) == ("FEES_RESTORED", None)
