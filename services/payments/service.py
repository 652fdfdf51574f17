"""Payments service wiring: inbound topic -> kit ingress -> application;
domain events -> ``ledger.payments`` through the outbox relay."""

from __future__ import annotations

from typing import Any

from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.payments import application
from services.payments.domain import Balance, Payment, PaymentsError

TOPIC = "ledger.payments"


def _movement(event: Any, reference: dict[str, str]) -> dict[str, Any]:
    return {**event.key, **reference, "amount": event.amount, "balance": event.balance_after,
            "balance_version": event.originator_version, "occurred_at": event.occurred_at.isoformat(),
            "origin": event.origin}


def translate(event: Any) -> Outbound | None:
    """A payments domain event as the CloudEvent published on ``ledger.payments``."""
    if isinstance(event, Payment.Recorded):
        return Outbound(TOPIC, event.beneficiary_id, "ledger.payment.recorded", event.paid_at, {
            "payment_id": event.payment_id, "beneficiary_id": event.beneficiary_id,
            "payer_id": event.payer_id, "payer_iban": event.payer_iban, "agency": event.agency,
            "service_code": event.service_code, "amount": event.amount, "currency": "SAR",
            "channel": event.channel, "paid_at": event.paid_at.isoformat(),
            "third_party_payer": event.payer_id != event.beneficiary_id, "origin": event.origin,
        }, subject=f"payment/{event.payment_id}")
    if isinstance(event, Payment.Acknowledged):
        return Outbound(TOPIC, event.beneficiary_id, "ledger.payment.acknowledged", event.acknowledged_at, {
            "payment_id": event.payment_id, "beneficiary_id": event.beneficiary_id,
            "acknowledged_at": event.acknowledged_at.isoformat(), "origin": event.origin,
        }, subject=f"payment/{event.payment_id}")
    if isinstance(event, Balance.Credited):
        return Outbound(TOPIC, event.key["beneficiary_id"], "ledger.balance.credited", event.occurred_at,
                        _movement(event, {"payment_id": event.payment_id}),
                        subject=f"payment/{event.payment_id}")
    if isinstance(event, Balance.Charged):
        return Outbound(TOPIC, event.key["beneficiary_id"], "ledger.balance.charged", event.occurred_at,
                        _movement(event, {"charge_id": event.charge_id}))
    return None  # Balance.Opened: the first movement carries everything a reader needs


SPEC = ServiceSpec(
    name="payments",
    inbound_topics=("payments",),
    build_application=application.PaymentsApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(PaymentsError,),
    outbound_topics=(TOPIC, "rejections"),
)
