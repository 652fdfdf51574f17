"""The SADAD bill number on a recorded payment: kept when given, optional, and payments recorded
before it existed still rebuild from their stored events. No I/O."""

from services.payments.domain import Payment
from services.payments.service import translate
from tests.unit.test_payments_domain import FACTS, ORIGIN


def test_a_payment_keeps_its_sadad_bill_number_and_publishes_it():
    payment = Payment(payment_id="PAY-1", origin=ORIGIN, sadad_bill_number="7700000000123456", **FACTS)
    [recorded] = payment.collect_events()
    outbound = translate(recorded)
    assert (payment.sadad_bill_number, outbound.data["sadad_bill_number"]) == ("7700000000123456",) * 2


def test_a_payment_without_a_bill_number_publishes_none():
    [recorded] = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS).collect_events()
    assert "sadad_bill_number" not in translate(recorded).data


def test_a_payment_stored_before_bill_numbers_existed_still_rebuilds():
    [recorded] = Payment(payment_id="PAY-1", origin=ORIGIN, **FACTS).collect_events()
    del recorded.__dict__["sadad_bill_number"]  # as an event stored by the previous version reads back
    rebuilt = recorded.mutate(None)
    assert (rebuilt.payment_id, rebuilt.sadad_bill_number) == ("PAY-1", None)
    assert "sadad_bill_number" not in translate(recorded).data
