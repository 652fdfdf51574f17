"""Refunds service wiring: ``refund-requests`` + ``bank-returns`` + the payments
service's hold decisions (``ledger.payments``) -> ingress; case events ->
``ledger.refunds``, orders -> ``bank-refund-orders``."""

from __future__ import annotations

from typing import Any

from services.kit.iban import bank_code
from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.refunds import application
from services.refunds.domain import RefundCase, RefundsError, StatusMismatch

TOPIC = "ledger.refunds"
ORDERS = "bank-refund-orders"


def _opened(event: RefundCase.Opened) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.requested", event.requested_at, {
        "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id, "agency": event.agency,
        "service_code": event.service_code, "amount": event.amount, "iban": event.iban,
        "channel": event.channel, "requested_at": event.requested_at.isoformat(), "origin": event.origin,
        "route": event.route, "state": event.state, "deadline": event.deadline.isoformat(),
        "route_owner": event.route_owner, "rules_version": event.rules_version,
        "third_party_payer": event.third_party_payer, "reference": event.reference,
    }, subject=f"refund/{event.refund_id}")


def _ordered(event: RefundCase.Ordered) -> list[Outbound]:
    facts = {"refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id, "amount": event.amount,
             "iban": event.iban, "route": event.route, "deadline": event.deadline.isoformat(),
             "ordered_at": event.ordered_at.isoformat()}
    decided = {"decided_by": event.decided_by} if event.decided_by else {}
    return [
        Outbound(TOPIC, event.beneficiary_id, "ledger.refund.ordered", event.ordered_at,
                 {**facts, **decided, "origin": event.origin}, subject=f"refund/{event.refund_id}"),
        Outbound(ORDERS, event.beneficiary_id, "refund.ordered", event.ordered_at,
                 {**facts, "bank_code": bank_code(event.iban), "currency": "SAR"}, subject=f"refund/{event.refund_id}"),
    ]


def _first_approved(event: RefundCase.FirstApproved) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.approval_recorded", event.approved_at, {
        "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id, "amount": event.amount,
        "queue": event.queue, "approved_by": event.approved_by, "approved_at": event.approved_at.isoformat(),
        "origin": event.origin,
    }, subject=f"refund/{event.refund_id}")


def _rejected(event: RefundCase.Rejected) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.rejected", event.rejected_at, {
        "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id, "rule": event.rule,
        "reason": event.reason, "decided_by": event.decided_by, "rejected_at": event.rejected_at.isoformat(),
        "origin": event.origin,
    }, subject=f"refund/{event.refund_id}")


def _completed(event: RefundCase.Completed) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.completed", event.completed_at, {
        "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id,
        "bank_reference": event.bank_reference, "amount": event.amount,
        "completed_at": event.completed_at.isoformat(), "on_time": event.on_time, "origin": event.origin,
    }, subject=f"refund/{event.refund_id}")


def _failed(event: RefundCase.Failed) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.failed", event.failed_at, {
        "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id,
        "bank_reference": event.bank_reference, "reason": event.reason,
        "failed_at": event.failed_at.isoformat(), "origin": event.origin,
    }, subject=f"refund/{event.refund_id}")


def _overdue(event: RefundCase.Overdue) -> Outbound:
    return Outbound(TOPIC, event.beneficiary_id, "ledger.refund.overdue", event.marked_at, {
        "refund_id": event.refund_id, "beneficiary_id": event.beneficiary_id, "agency": event.agency,
        "route": event.route, "state": event.state, "owner": event.owner,
        "deadline": event.deadline.isoformat(), "marked_at": event.marked_at.isoformat(),
    }, subject=f"refund/{event.refund_id}")


def _status_mismatch(event: StatusMismatch.Flagged) -> Outbound:
    return Outbound(TOPIC, event.sponsor_id, "ledger.refund.status_mismatch", event.flagged_at, {
        "refund_id": event.refund_id, "sponsor_id": event.sponsor_id, "export_number": event.export_number,
        "serial_number": event.serial_number, "status": event.status,
        "status_changed_at": event.status_changed_at.isoformat(), "deadline": event.deadline.isoformat(),
        "refund_state": event.refund_state, "owner": event.owner, "flagged_at": event.flagged_at.isoformat(),
    }, subject=f"refund/{event.refund_id}")


#: Case events as CloudEvents. A parked bank answer is internal until it applies.
TRANSLATIONS: dict[type, Any] = {
    RefundCase.Opened: _opened,
    RefundCase.Ordered: _ordered,
    RefundCase.FirstApproved: _first_approved,  # four eyes
    RefundCase.Rejected: _rejected,
    RefundCase.Completed: _completed,
    RefundCase.Failed: _failed,
    RefundCase.Overdue: _overdue,
    StatusMismatch.Flagged: _status_mismatch,
}


def translate(event: Any) -> Outbound | list[Outbound] | None:
    outbound = TRANSLATIONS.get(type(event))
    return outbound(event) if outbound else None


SPEC = ServiceSpec(
    name="refunds",
    inbound_topics=("refund-requests", "bank-returns", "refund-decisions", "ledger.payments", "ledger.visas"),
    build_application=application.RefundsApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(RefundsError,),
    outbound_topics=(TOPIC, ORDERS, "rejections"),
    timer_handlers=application.timer_handlers,
)
