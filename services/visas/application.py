"""The visas application: commands from inbound events, and the visa query.

Every handler opens the visa if this is the first fact about it (a
cancellation may come before the issue: different topics), then calls one
aggregate command; routing reads the versioned rules loaded here once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict
from uuid import UUID

from services.kit.envelope import Envelope
from services.kit.ingress import Handler, Reading, UnitOfWork
from services.kit.rules import Rules
from services.kit.store import LedgerApplication, rules_of
from services.visas.domain import Visa


class VisaView(TypedDict):
    sponsor_id: str
    export_number: str
    serial_number: str
    visa_type: str | None
    payment_id: str | None
    fee: int | None
    issued_at: datetime | None
    cancellation_requested_at: datetime | None
    cancellation_channel: str | None
    cancelled_at: datetime | None          # Musaned accepted the cancellation
    route: str | None
    route_reason: str | None
    rules_version: str | None
    hours_since_issue: float | None
    outcome: str | None                    # REFUND_STARTED, CLOSED_NON_REFUNDABLE
    status: str | None                     # NIC's latest status
    status_changed_at: datetime | None
    waiting_for: list[str]


class VisasApplication(LedgerApplication):
    name = "visas"

    def visa(self, sponsor_id: str, export_number: str, serial_number: str) -> VisaView | None:
        visa: Visa | None = self.find(Visa.create_id(sponsor_id, export_number, serial_number))
        if visa is None:
            return None
        routing = visa.routing
        return VisaView(
            sponsor_id=sponsor_id, export_number=export_number, serial_number=serial_number,
            visa_type=visa.visa_type, payment_id=visa.payment_id, fee=visa.fee,
            issued_at=visa.issued_at, cancellation_requested_at=visa.requested_at,
            cancellation_channel=visa.channel, cancelled_at=visa.accepted_at,
            route=routing.route if routing else None, route_reason=routing.reason if routing else None,
            rules_version=routing.rules_version if routing else None,
            hours_since_issue=routing.hours_since_issue if routing else None, outcome=visa.outcome,
            status=visa.status, status_changed_at=visa.status_changed_at, waiting_for=visa.waiting_for)


def _visa(uow: UnitOfWork, data: dict[str, Any]) -> Visa:
    """The visa the event names; opened here if this is the first fact about it."""
    key = {"sponsor_id": data["sponsor_id"], "export_number": data["export_number"],
           "serial_number": data["serial_number"]}
    visa: Visa | None = uow.get(Visa.create_id(**key))
    if visa is None:
        visa = Visa(**key)
        uow.add(visa)
    return visa


class Visas:
    """The command handlers, bound to the rules."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def issue(self, uow: UnitOfWork, envelope: Envelope) -> None:
        d = envelope.data
        _visa(uow, d).issue(visa_type=d["visa_type"], payment_id=d["payment_id"], fee=d["fee"],
                            issued_at=envelope.at("issued_at"), origin=envelope.origin, rules=self.rules)

    def request_cancellation(self, uow: UnitOfWork, envelope: Envelope) -> None:
        _visa(uow, envelope.data).request_cancellation(
            requested_at=envelope.at("requested_at"), channel=envelope.data["channel"], origin=envelope.origin,
            rules=self.rules)

    def accept_cancellation(self, uow: UnitOfWork, envelope: Envelope) -> None:
        _visa(uow, envelope.data).accept_cancellation(accepted_at=envelope.at("accepted_at"), origin=envelope.origin)

    def change_status(self, uow: UnitOfWork, envelope: Envelope) -> None:
        _visa(uow, envelope.data).change_status(status=envelope.data["status"], changed_at=envelope.at("changed_at"),
                                                origin=envelope.origin)


def _visa_of(envelope: Envelope) -> tuple[UUID]:
    d = envelope.data
    return (Visa.create_id(sponsor_id=d["sponsor_id"], export_number=d["export_number"],
                           serial_number=d["serial_number"]),)


def handlers(app: LedgerApplication) -> dict[str, Handler]:
    """Each handler with the visa it reads (a batch's visas are loaded in one query)."""
    visas = Visas(rules_of(app))
    return {
        "visa.issued": Reading(visas.issue, _visa_of),
        "visa.status_changed": Reading(visas.change_status, _visa_of),
        "visa.cancellation_requested": Reading(visas.request_cancellation, _visa_of),
        "visa.cancellation_accepted": Reading(visas.accept_cancellation, _visa_of),
    }
