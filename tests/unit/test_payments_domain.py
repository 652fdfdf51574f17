"""Payments domain rules, asserted on the events aggregates emit. No I/O."""

from datetime import datetime, timezone

import pytest

from services.payments.domain import (
    Balance,
    ChargeConflict,
    InsufficientBalance,
    Payment,
    PaymentConflict,
    RefundHold,
)

IBAN_OWN = "SA0380000000608010167519"
IBAN_OTHER = "SA4420000001234567891234"
PAID_AT = datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)
ORIGIN = {"source": "bank/80", "id": "evt-1", "type": "payment.recorded"}
FACTS = dict(beneficiary_id="1012345672", payer_id="1012345672", payer_iban="SA0380000000608010167519",
             agency="JAWAZAT", service_code="PASSPORT_ISSUE", amount=30000, channel="SADAD_ONLINE",
             paid_at=PAID_AT)


def new_balance() -> Balance:
    return Balance(beneficiary_id="1012345672", agency="JAWAZAT", service_code="PASSPORT_ISSUE")


def test_payment_ids_are_deterministic_from_the_natural_key():
    assert Payment.create_id("PAY-1") == Payment.create_id("PAY-1")
    assert Payment.create_id("PAY-1") != Payment.create_id("PAY-2")
    assert Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS).id == Payment.create_id("PAY-1")
    assert Balance.create_id("1012345672", "JAWAZAT", "A") != Balance.create_id("1012345672", "MOI", "A")


def test_recording_a_payment_emits_recorded_with_its_facts():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS)
    [recorded] = payment.collect_events()
    assert isinstance(recorded, Payment.Recorded)
    assert (recorded.amount, recorded.paid_at, recorded.channel) == (30000, PAID_AT, "SADAD_ONLINE")
    assert payment.third_party_payer is False


def test_flags_a_payer_who_is_not_the_beneficiary():
    payment = Payment(payment_id="PAY-2", origin=ORIGIN, **{**FACTS, "payer_id": "2098765437"})
    assert payment.third_party_payer is True


def test_accepts_the_same_payment_facts_again_without_change():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS)
    payment.collect_events()
    payment.check_same_facts(**FACTS)
    assert payment.collect_events() == []


def test_rejects_a_payment_id_reused_with_a_different_amount():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS)
    with pytest.raises(PaymentConflict, match="amount"):
        payment.check_same_facts(**{**FACTS, "amount": 1})


def test_acknowledges_once_and_ignores_repeats():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS)
    payment.collect_events()
    first = datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
    payment.acknowledge(first, ORIGIN)
    payment.acknowledge(datetime(2026, 11, 2, tzinfo=timezone.utc), ORIGIN)
    events = payment.collect_events()
    assert [type(e) for e in events] == [Payment.Acknowledged]
    assert payment.acknowledged_at == first
    assert events[0].payment_id == "PAY-1"


def test_credit_then_charge_leaves_the_difference_available():
    balance = new_balance()
    balance.credit(payment_id="PAY-1", payer_iban=IBAN_OWN, amount=30000, occurred_at=PAID_AT, origin=ORIGIN)
    balance.charge(charge_id="CHG-1", amount=20000, occurred_at=PAID_AT, origin=ORIGIN)
    events = balance.collect_events()
    assert [type(e) for e in events] == [Balance.Opened, Balance.Credited, Balance.Charged]
    assert events[-1].balance_after == {"credited": 30000, "charged": 20000, "held": 0, "refunded": 0,
                                        "available": 10000}
    assert balance.available == 10000


def test_rejects_a_charge_that_would_make_the_balance_negative():
    balance = new_balance()
    balance.credit(payment_id="PAY-1", payer_iban=IBAN_OWN, amount=100, occurred_at=PAID_AT, origin=ORIGIN)
    with pytest.raises(InsufficientBalance):
        balance.charge(charge_id="CHG-1", amount=101, occurred_at=PAID_AT, origin=ORIGIN)
    assert balance.available == 100


def test_a_repeated_charge_id_is_applied_once():
    balance = new_balance()
    balance.credit(payment_id="PAY-1", payer_iban=IBAN_OWN, amount=500, occurred_at=PAID_AT, origin=ORIGIN)
    balance.charge(charge_id="CHG-1", amount=200, occurred_at=PAID_AT, origin=ORIGIN)
    balance.charge(charge_id="CHG-1", amount=200, occurred_at=PAID_AT, origin=ORIGIN)
    assert balance.charged == 200


def test_rejects_a_charge_id_reused_with_another_amount():
    balance = new_balance()
    balance.credit(payment_id="PAY-1", payer_iban=IBAN_OWN, amount=500, occurred_at=PAID_AT, origin=ORIGIN)
    balance.charge(charge_id="CHG-1", amount=200, occurred_at=PAID_AT, origin=ORIGIN)
    with pytest.raises(ChargeConflict):
        balance.charge(charge_id="CHG-1", amount=300, occurred_at=PAID_AT, origin=ORIGIN)


def funded_balance(amount: int = 30000) -> Balance:
    balance = new_balance()
    balance.credit(payment_id="PAY-1", payer_iban=IBAN_OWN, amount=amount, occurred_at=PAID_AT, origin=ORIGIN)
    balance.collect_events()
    return balance


def test_a_refund_goes_only_to_an_account_that_paid_into_the_balance():
    balance = funded_balance()
    assert balance.refusal(iban=IBAN_OWN, amount=30000) is None
    rule, reason = balance.refusal(iban=IBAN_OTHER, amount=100)
    assert rule == "iban_not_payer" and "account that paid" in reason


def test_a_refund_larger_than_the_available_balance_is_refused_not_clamped():
    balance = funded_balance(30000)
    balance.charge(charge_id="CHG-1", amount=20000, occurred_at=PAID_AT, origin=ORIGIN)
    rule, reason = balance.refusal(iban=IBAN_OWN, amount=10001)
    assert rule == "insufficient_balance" and "10000" in reason
    with pytest.raises(InsufficientBalance):
        balance.hold(refund_id="R-1", amount=10001, occurred_at=PAID_AT, origin=ORIGIN)
    assert balance.available == 10000


def test_a_hold_sets_money_aside_and_the_bank_completion_posts_it():
    balance = funded_balance(30000)
    balance.hold(refund_id="R-1", amount=12000, occurred_at=PAID_AT, origin=ORIGIN)
    assert (balance.held, balance.available) == (12000, 18000)
    balance.post_hold(refund_id="R-1", amount=12000, occurred_at=PAID_AT, origin=ORIGIN)
    events = balance.collect_events()
    assert [type(e) for e in events] == [Balance.Held, Balance.Refunded]
    assert events[-1].balance_after == {"credited": 30000, "charged": 0, "held": 0, "refunded": 12000,
                                        "available": 18000}


def test_a_bank_failure_releases_the_hold():
    balance = funded_balance(30000)
    balance.hold(refund_id="R-1", amount=12000, occurred_at=PAID_AT, origin=ORIGIN)
    balance.release_hold(refund_id="R-1", amount=12000, occurred_at=PAID_AT, origin=ORIGIN)
    events = balance.collect_events()
    assert [type(e) for e in events] == [Balance.Held, Balance.Released]
    assert (balance.held, balance.refunded, balance.available) == (0, 0, 30000)


def test_a_hold_closes_once_whatever_the_bank_says_afterwards():
    hold = RefundHold(refund_id="R-1", balance_key={"beneficiary_id": "1012345672"}, amount=100, iban=IBAN_OWN,
                      refused_rule=None, refused_reason=None, occurred_at=PAID_AT, origin=ORIGIN)
    hold.close(completed=True, occurred_at=PAID_AT, origin=ORIGIN)
    hold.close(completed=False, occurred_at=PAID_AT, origin=ORIGIN)
    assert hold.state == "POSTED"
    assert [type(e) for e in hold.collect_events()] == [RefundHold.Decided, RefundHold.Closed]


def test_a_refused_hold_records_the_rule_and_never_opens():
    hold = RefundHold(refund_id="R-2", balance_key={"beneficiary_id": "1012345672"}, amount=100, iban=IBAN_OTHER,
                      refused_rule="iban_not_payer", refused_reason="not the paying account", occurred_at=PAID_AT,
                      origin=ORIGIN)
    hold.close(completed=True, occurred_at=PAID_AT, origin=ORIGIN)
    assert hold.state == "REFUSED" and not hold.open
    assert [type(e) for e in hold.collect_events()] == [RefundHold.Decided]


def test_a_payment_not_acknowledged_in_time_is_flagged_once_and_resolved_by_a_late_acknowledgement():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS)
    payment.collect_events()
    due = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
    payment.mark_unreflected(due_at=due, rules_version="2021-09.1")
    payment.mark_unreflected(due_at=due, rules_version="2021-09.1")
    late = datetime(2026, 11, 3, 8, tzinfo=timezone.utc)
    payment.acknowledge(late, ORIGIN)
    events = payment.collect_events()
    assert [type(e) for e in events] == [Payment.Unreflected, Payment.Acknowledged, Payment.UnreflectedResolved]
    assert (events[0].due_at, events[0].rules_version) == (due, "2021-09.1")
    assert events[2].unreflected_since == due


def test_an_acknowledged_payment_is_never_flagged_as_not_reflected():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS)
    payment.acknowledge(datetime(2026, 11, 1, 10, tzinfo=timezone.utc), ORIGIN)
    payment.collect_events()
    payment.mark_unreflected(due_at=datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc), rules_version="x")
    assert payment.collect_events() == []
