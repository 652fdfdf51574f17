"""The payments application: commands from inbound events, and queries."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TypedDict
from uuid import UUID

from services.kit.envelope import Envelope
from services.kit.ingress import Handler, Reading, TimerHandler, UnitOfWork
from services.kit.rules import Rules
from services.kit.store import LedgerApplication, rules_of
from services.payments.domain import Balance, Payment, RefundHold, UnknownPayment


class BalanceView(TypedDict):
    beneficiary_id: str
    agency: str
    service_code: str
    credited: int
    charged: int
    held: int
    refunded: int
    available: int


UNREFLECTED = "payment.unreflected"


class PaymentsApplication(LedgerApplication):
    name = "payments"

    def balance(self, beneficiary_id: str, agency: str, service_code: str) -> BalanceView | None:
        balance: Balance | None = self.find(Balance.create_id(beneficiary_id, agency, service_code))
        if balance is None:
            return None
        return BalanceView(beneficiary_id=beneficiary_id, agency=agency, service_code=service_code,
                           **balance.totals())


def record_payment(uow: UnitOfWork, envelope: Envelope, rules: Rules) -> None:
    data = envelope.data
    facts = {
        "beneficiary_id": data["beneficiary_id"],
        "payer_id": data["payer_id"],
        "payer_iban": data["payer_iban"],  # checksum verified by the kit's parse
        "agency": data["agency"],
        "service_code": data["service_code"],
        "amount": data["amount"],
        "channel": data["channel"],
        "paid_at": envelope.at("paid_at"),
    }
    existing: Payment | None = uow.get(Payment.create_id(data["payment_id"]))
    if existing is not None:
        existing.check_same_facts(**facts)
        return  # the same payment reported again (new CloudEvent id): already counted
    where = envelope.origin
    uow.add(Payment(payment_id=data["payment_id"], origin=where, sadad_bill_number=data.get("sadad_bill_number"),
                    **facts))
    uow.schedule(UNREFLECTED, data["payment_id"], facts["paid_at"] + rules.unreflected_payment_after)
    balance_id = Balance.create_id(facts["beneficiary_id"], facts["agency"], facts["service_code"])
    balance: Balance | None = uow.get(balance_id)
    if balance is None:
        balance = Balance(beneficiary_id=facts["beneficiary_id"], agency=facts["agency"],
                          service_code=facts["service_code"])
        uow.add(balance)
    balance.credit(payment_id=data["payment_id"], payer_iban=facts["payer_iban"], amount=facts["amount"],
                   occurred_at=facts["paid_at"], origin=where)


def acknowledge_payment(uow: UnitOfWork, envelope: Envelope) -> None:
    payment_id = envelope.data["payment_id"]
    payment: Payment | None = uow.get(Payment.create_id(payment_id))
    if payment is None:
        raise UnknownPayment(f"payment {payment_id} has not been recorded")
    payment.acknowledge(envelope.at("acknowledged_at"), envelope.origin)
    uow.cancel(UNREFLECTED, payment_id)


def flag_unreflected(uow: UnitOfWork, payment_id: str, due_at: datetime, rules: Rules) -> None:
    """Timer: no acknowledgement in time."""
    payment: Payment | None = uow.get(Payment.create_id(payment_id))
    if payment is not None:
        payment.mark_unreflected(due_at=due_at, rules_version=rules.version)


def charge_fee(uow: UnitOfWork, envelope: Envelope) -> None:
    data = envelope.data
    balance: Balance | None = uow.get(Balance.create_id(data["beneficiary_id"], data["agency"],
                                                        data["service_code"]))
    if balance is None:
        balance = Balance(beneficiary_id=data["beneficiary_id"], agency=data["agency"],
                          service_code=data["service_code"])
        balance.check_can_cover(data["amount"])  # raises: nothing was ever paid here
    balance.charge(charge_id=data["charge_id"], amount=data["amount"],
                   occurred_at=envelope.at("charged_at"), origin=envelope.origin)


def hold_for_refund(uow: UnitOfWork, envelope: Envelope) -> None:
    """A bank-channel refund request (from the refunds service): hold or refuse, once."""
    d = envelope.data
    if d["channel"] != "BANK" or uow.get(RefundHold.create_id(d["refund_id"])) is not None:
        return  # other channels do not draw on a SADAD balance; a repeat changes nothing
    key = {"beneficiary_id": d["beneficiary_id"], "agency": d["agency"], "service_code": d["service_code"]}
    balance: Balance | None = uow.get(Balance.create_id(**key))
    if balance is None:
        refusal: tuple[str, str] | None = (
            "no_balance", f"no payment for beneficiary {d['beneficiary_id']} for {d['service_code']} at "
                          f"{d['agency']}: a refund names the same beneficiary and service that were paid")
    else:
        refusal = balance.refusal(iban=d["iban"], amount=d["amount"])
    at = envelope.time
    if refusal is None:
        assert balance is not None
        balance.hold(refund_id=d["refund_id"], amount=d["amount"], occurred_at=at, origin=envelope.origin)
    uow.add(RefundHold(refund_id=d["refund_id"], balance_key=key, amount=d["amount"], iban=d["iban"],
                       refused_rule=refusal[0] if refusal else None, refused_reason=refusal[1] if refusal else None,
                       occurred_at=at, origin=envelope.origin))


def _close_hold(uow: UnitOfWork, envelope: Envelope, completed: bool) -> None:
    hold: RefundHold | None = uow.get(RefundHold.create_id(envelope.data["refund_id"]))
    if hold is None or not hold.open:
        return  # no hold (a visa or Absher refund), or already closed: nothing to do
    balance: Balance = uow.get(Balance.create_id(**hold.balance_key))
    movement = balance.post_hold if completed else balance.release_hold
    movement(refund_id=hold.refund_id, amount=hold.amount, occurred_at=envelope.time, origin=envelope.origin)
    hold.close(completed=completed, occurred_at=envelope.time, origin=envelope.origin)


def post_refund(uow: UnitOfWork, envelope: Envelope) -> None:
    """The bank paid a held refund."""
    _close_hold(uow, envelope, completed=True)


def release_refund(uow: UnitOfWork, envelope: Envelope) -> None:
    """The bank could not pay: the hold is released."""
    _close_hold(uow, envelope, completed=False)


def _balance_of(envelope: Envelope) -> UUID:
    d = envelope.data
    return Balance.create_id(d["beneficiary_id"], d["agency"], d["service_code"])


def _payment_of(envelope: Envelope) -> UUID:
    return Payment.create_id(envelope.data["payment_id"])


def _hold_of(envelope: Envelope) -> UUID:
    return RefundHold.create_id(envelope.data["refund_id"])


def handlers(app: LedgerApplication) -> dict[str, Handler]:
    """Each handler with the aggregates it reads (loaded for a whole batch in one query)."""
    rules = rules_of(app)
    return {
        "payment.recorded": Reading(partial(record_payment, rules=rules), lambda e: (_payment_of(e), _balance_of(e))),
        "payment.acknowledged": Reading(acknowledge_payment, lambda e: (_payment_of(e),)),
        "fee.charged": Reading(charge_fee, lambda e: (_balance_of(e),)),
        "ledger.refund.requested": Reading(hold_for_refund, lambda e: (_hold_of(e), _balance_of(e))),
        "ledger.refund.completed": Reading(post_refund, lambda e: (_hold_of(e),)),
        "ledger.refund.failed": Reading(release_refund, lambda e: (_hold_of(e),)),
    }


def timer_handlers(app: LedgerApplication) -> dict[str, TimerHandler]:
    rules = rules_of(app)
    return {UNREFLECTED: lambda uow, key, due_at, now: flag_unreflected(uow, key, due_at, rules)}
