"""Payments service wiring: inbound topic -> kit ingress -> application;
domain events -> ``ledger.payments`` through the outbox relay."""

from __future__ import annotations

from typing import Any

from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.payments import application
from services.payments.domain import Balance, Payment, PaymentsError, RefundHold

TOPIC = "ledger.payments"


def _movement(event: Any, reference: dict[str, str]) -> dict[str, Any]:
    return {**event.key, **reference, "amount": event.amount, "balance": event.balance_after,
            "balance_version": event.originator_version, "occurred_at": event.occurred_at.isoformat(),
            "origin": event.origin}


def _recorded(event: Payment.Recorded) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.payment.recorded", event.paid_at, {
        "payment_id": event.payment_id, "beneficiary_id": event.beneficiary_id,
        "payer_id": event.payer_id, "payer_iban": event.payer_iban, "agency": event.agency,
        "service_code": event.service_code, "amount": event.amount, "currency": "SAR",
        "channel": event.channel, "paid_at": event.paid_at.isoformat(),
        "third_party_payer": event.payer_id != event.beneficiary_id, "origin": event.origin,
        **_bill(event),
    }, subject=f"payment/{event.payment_id}")


def _bill(event: Payment.Recorded) -> dict[str, str]:
    """The SADAD bill number, when the payment came with one (events stored before it existed have none)."""
    number = getattr(event, "sadad_bill_number", None)
    return {"sadad_bill_number": number} if number else {}


def _acknowledged(event: Payment.Acknowledged) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.payment.acknowledged", event.acknowledged_at, {
        "payment_id": event.payment_id, "beneficiary_id": event.beneficiary_id,
        "acknowledged_at": event.acknowledged_at.isoformat(), "origin": event.origin,
    }, subject=f"payment/{event.payment_id}")


def _unreflected(event: Payment.Unreflected) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.payment.unreflected", event.due_at, {
        "payment_id": event.payment_id, "beneficiary_id": event.beneficiary_id, "agency": event.agency,
        "service_code": event.service_code, "amount": event.amount, "channel": event.channel,
        "paid_at": event.paid_at.isoformat(), "due_at": event.due_at.isoformat(),
        "rules_version": event.rules_version,
    }, subject=f"payment/{event.payment_id}")


def _unreflected_resolved(event: Payment.UnreflectedResolved) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.payment.unreflected_resolved", event.acknowledged_at, {
        "payment_id": event.payment_id, "beneficiary_id": event.beneficiary_id, "agency": event.agency,
        "acknowledged_at": event.acknowledged_at.isoformat(), "unreflected_since": event.unreflected_since.isoformat(),
    }, subject=f"payment/{event.payment_id}")


def _movement_of(event_type: str, reference: str, subject: str | None = None):
    def outbound(event: Any) -> Outbound:
        ref = getattr(event, reference)
        return Outbound(TOPIC, event.key["beneficiary_id"], event_type, event.occurred_at,
                        _movement(event, {reference: ref}), subject=f"{subject}/{ref}" if subject else None)
    return outbound


def _hold_decided(event: RefundHold.Decided) -> Outbound | None:
    if not event.refused_rule:
        return None  # a granted hold is published as the balance's Held movement
    return Outbound(TOPIC, event.balance_key["beneficiary_id"], "ledger.balance.hold_refused", event.occurred_at, {
        **event.balance_key, "refund_id": event.refund_id, "amount": event.amount, "rule": event.refused_rule,
        "reason": event.refused_reason, "occurred_at": event.occurred_at.isoformat(), "origin": event.origin,
    }, subject=f"refund/{event.refund_id}")


#: Domain event class -> its CloudEvent on ``ledger.payments``. Balance.Opened and a
#: hold's closing are not published: the movements carry every fact a reader needs.
TRANSLATIONS: dict[type, Any] = {
    Payment.Recorded: _recorded,
    Payment.Acknowledged: _acknowledged,
    Payment.Unreflected: _unreflected,
    Payment.UnreflectedResolved: _unreflected_resolved,
    Balance.Credited: _movement_of("ledger.balance.credited", "payment_id", "payment"),
    Balance.Charged: _movement_of("ledger.balance.charged", "charge_id"),
    Balance.Held: _movement_of("ledger.balance.held", "refund_id", "refund"),
    Balance.Refunded: _movement_of("ledger.balance.refunded", "refund_id", "refund"),
    Balance.Released: _movement_of("ledger.balance.released", "refund_id", "refund"),
    RefundHold.Decided: _hold_decided,
}


def translate(event: Any) -> Outbound | None:
    """A payments domain event as the CloudEvent published on ``ledger.payments``."""
    outbound = TRANSLATIONS.get(type(event))
    return outbound(event) if outbound else None


SPEC = ServiceSpec(
    name="payments",
    inbound_topics=("payments", "ledger.refunds"),
    build_application=application.PaymentsApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(PaymentsError,),
    outbound_topics=(TOPIC, "rejections"),
    timer_handlers=application.timer_handlers,
)
