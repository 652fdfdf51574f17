"""Visas service wiring: ``visas`` + ``cancellations`` -> kit ingress -> application;
domain events -> ``ledger.visas`` through the outbox relay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.visas import application
from services.visas.domain import Visa, VisasError

TOPIC = "ledger.visas"


def _times(**times: datetime | None) -> dict[str, str]:
    """The known times as RFC 3339 strings; unknown ones are left out."""
    return {name: at.isoformat() for name, at in times.items() if at is not None}


def _outbound(event_type: str, event: Any, time: datetime, data: dict[str, Any]) -> Outbound:
    key = event.key
    return Outbound(TOPIC, key["sponsor_id"], event_type, time, {**key, **data, "origin": event.origin},
                    subject=f"visa/{key['sponsor_id']}/{key['export_number']}/{key['serial_number']}")


def _case(event: Any) -> dict[str, Any]:
    """The facts a decision event repeats: the visa, its payment and its cancellation."""
    return {"visa_type": event.visa_type, "payment_id": event.payment_id, "issued_at": event.issued_at.isoformat(),
            "requested_at": event.requested_at.isoformat(), "channel": event.channel,
            "rules_version": event.rules_version, "route": event.route, "reason": event.reason}


def _waiting_for(*facts: tuple[str, Any]) -> dict[str, list[str]]:
    missing = [name for name, known in facts if known is None]
    return {"waiting_for": missing} if missing else {}


def _issued(event: Visa.Issued) -> Outbound:
    return _outbound("ledger.visa.issued", event, event.issued_at, {
        "visa_type": event.visa_type, "payment_id": event.payment_id, "fee": event.fee,
        "issued_at": event.issued_at.isoformat()})


def _requested(event: Visa.CancellationRequested) -> Outbound:
    return _outbound("ledger.visa.cancellation_requested", event, event.requested_at, {
        "requested_at": event.requested_at.isoformat(), "channel": event.channel, **_times(issued_at=event.issued_at),
        **_waiting_for(("visa.issued", event.issued_at))})


def _accepted(event: Visa.CancellationAccepted) -> Outbound:
    return _outbound("ledger.visa.cancellation_accepted", event, event.accepted_at, {
        "accepted_at": event.accepted_at.isoformat(),
        **_times(issued_at=event.issued_at, requested_at=event.requested_at),
        **({"channel": event.channel} if event.channel else {}),
        **_waiting_for(("visa.issued", event.issued_at), ("visa.cancellation_requested", event.requested_at))})


def _routed(event: Visa.CancellationRouted) -> Outbound:
    return _outbound("ledger.visa.cancellation_routed", event, event.requested_at, {
        **_case(event), "fee": event.fee, "rule": event.rule, "hours_since_issue": event.hours_since_issue,
        "seconds_since_issue": event.seconds_since_issue})


def _refund_started(event: Visa.RefundStarted) -> Outbound:
    return _outbound("ledger.visa.refund_started", event, event.accepted_at, {
        **_case(event), "amount": event.fee, "currency": "SAR", "hours_since_issue": event.hours_since_issue,
        "accepted_at": event.accepted_at.isoformat()})


def _closed_non_refundable(event: Visa.ClosedNonRefundable) -> Outbound:
    return _outbound("ledger.visa.closed_non_refundable", event, event.accepted_at, {
        **_case(event), "fee": event.fee, "accepted_at": event.accepted_at.isoformat()})


def _status_changed(event: Visa.StatusChanged) -> Outbound:
    return _outbound("ledger.visa.status_changed", event, event.changed_at, {
        "status": event.status, "changed_at": event.changed_at.isoformat(),
        **({"payment_id": event.payment_id} if event.payment_id else {})})


#: Domain event class -> its CloudEvent on ``ledger.visas``. Visa.Opened is not
#: published: it only names the visa, and the first fact about it follows at once.
TRANSLATIONS: dict[type, Callable[[Any], Outbound]] = {
    Visa.Issued: _issued,
    Visa.CancellationRequested: _requested,
    Visa.CancellationAccepted: _accepted,
    Visa.CancellationRouted: _routed,
    Visa.RefundStarted: _refund_started,
    Visa.ClosedNonRefundable: _closed_non_refundable,
    Visa.StatusChanged: _status_changed,
}


def translate(event: Any) -> Outbound | None:
    """A visas domain event as the CloudEvent published on ``ledger.visas``."""
    outbound = TRANSLATIONS.get(type(event))
    return outbound(event) if outbound else None


SPEC = ServiceSpec(
    name="visas",
    inbound_topics=("visas", "cancellations"),
    build_application=application.VisasApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(VisasError,),
    outbound_topics=(TOPIC, "rejections"),
)
