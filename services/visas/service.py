"""Visas service wiring: ``visas`` + ``cancellations`` -> ingress; events -> ``ledger.visas``."""

from __future__ import annotations

from typing import Any

from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.visas import application
from services.visas.domain import Visa, VisasError

TOPIC = "ledger.visas"


def _subject(key: dict[str, str]) -> str:
    return f"visa/{key['sponsor_id']}/{key['export_number']}/{key['serial_number']}"


def translate(event: Any) -> Outbound | None:
    if isinstance(event, Visa.Issued):
        key = {"sponsor_id": event.sponsor_id, "export_number": event.export_number,
               "serial_number": event.serial_number}
        return Outbound(TOPIC, event.sponsor_id, "ledger.visa.issued", event.issued_at, {
            **key, "visa_type": event.visa_type, "payment_id": event.payment_id, "fee": event.fee,
            "issued_at": event.issued_at.isoformat(), "origin": event.origin}, subject=_subject(key))
    if isinstance(event, Visa.StatusChanged):
        return Outbound(TOPIC, event.key["sponsor_id"], "ledger.visa.status_changed", event.changed_at, {
            **event.key, "status": event.status, "changed_at": event.changed_at.isoformat(),
            "origin": event.origin}, subject=_subject(event.key))
    if isinstance(event, Visa.CancellationRequested):
        return Outbound(TOPIC, event.key["sponsor_id"], "ledger.visa.cancellation_requested",
                        event.requested_at, {**event.key, "requested_at": event.requested_at.isoformat(),
                                             "channel": event.channel, "origin": event.origin},
                        subject=_subject(event.key))
    if isinstance(event, Visa.CancellationAccepted):
        return Outbound(TOPIC, event.key["sponsor_id"], "ledger.visa.cancellation_accepted",
                        event.accepted_at, {**event.key, "accepted_at": event.accepted_at.isoformat(),
                                            "origin": event.origin}, subject=_subject(event.key))
    return None


SPEC = ServiceSpec(
    name="visas",
    inbound_topics=("visas", "cancellations"),
    build_application=application.VisasApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(VisasError,),
    outbound_topics=(TOPIC, "rejections"),
)
