"""Refunds service wiring: ``refund-requests`` + ``bank-returns`` -> ingress;
events -> ``ledger.refunds``."""

from __future__ import annotations

from typing import Any

from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.refunds import application
from services.refunds.domain import RefundCase, RefundsError

TOPIC = "ledger.refunds"


def translate(event: Any) -> Outbound | None:
    if isinstance(event, RefundCase.Requested):
        return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.requested", event.requested_at, {
            "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id, "agency": event.agency,
            "service_code": event.service_code, "amount": event.amount, "iban": event.iban,
            "channel": event.channel, "requested_at": event.requested_at.isoformat(), "origin": event.origin,
        }, subject=f"refund/{event.refund_id}")
    if isinstance(event, RefundCase.Completed):
        return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.completed", event.completed_at, {
            "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id,
            "bank_reference": event.bank_reference, "amount": event.amount,
            "completed_at": event.completed_at.isoformat(), "origin": event.origin,
        }, subject=f"refund/{event.refund_id}")
    if isinstance(event, RefundCase.Failed):
        return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.failed", event.failed_at, {
            "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id,
            "bank_reference": event.bank_reference, "reason": event.reason,
            "failed_at": event.failed_at.isoformat(), "origin": event.origin,
        }, subject=f"refund/{event.refund_id}")
    return None


SPEC = ServiceSpec(
    name="refunds",
    inbound_topics=("refund-requests", "bank-returns"),
    build_application=application.RefundsApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(RefundsError,),
    outbound_topics=(TOPIC, "rejections"),
)
