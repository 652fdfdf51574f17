"""The visas application: commands from inbound events."""

from __future__ import annotations

from services.kit.envelope import Envelope
from services.kit.ingress import Handler, UnitOfWork
from services.kit.store import LedgerApplication
from services.visas.domain import UnknownVisa, Visa


class VisasApplication(LedgerApplication):
    name = "visas"


def _visa(uow: UnitOfWork, data: dict) -> Visa:
    visa: Visa | None = uow.get(Visa.create_id(data["sponsor_id"], data["export_number"], data["serial_number"]))
    if visa is None:
        raise UnknownVisa(f"visa {data['export_number']}/{data['serial_number']} of sponsor "
                          f"{data['sponsor_id']} has not been issued in the ledger")
    return visa


def issue_visa(uow: UnitOfWork, envelope: Envelope) -> None:
    d = envelope.data
    facts = {"visa_type": d["visa_type"], "payment_id": d["payment_id"], "fee": d["fee"],
             "issued_at": envelope.at("issued_at")}
    existing: Visa | None = uow.get(Visa.create_id(d["sponsor_id"], d["export_number"], d["serial_number"]))
    if existing is not None:
        existing.check_same_issue(**facts)
        return
    uow.add(Visa(sponsor_id=d["sponsor_id"], export_number=d["export_number"],
                 serial_number=d["serial_number"], origin=envelope.origin, **facts))


def change_status(uow: UnitOfWork, envelope: Envelope) -> None:
    _visa(uow, envelope.data).change_status(envelope.data["status"], envelope.at("changed_at"), envelope.origin)


def request_cancellation(uow: UnitOfWork, envelope: Envelope) -> None:
    _visa(uow, envelope.data).request_cancellation(envelope.at("requested_at"), envelope.data["channel"],
                                                   envelope.origin)


def accept_cancellation(uow: UnitOfWork, envelope: Envelope) -> None:
    _visa(uow, envelope.data).accept_cancellation(envelope.at("accepted_at"), envelope.origin)


def handlers(_: LedgerApplication) -> dict[str, Handler]:
    return {
        "visa.issued": issue_visa,
        "visa.status_changed": change_status,
        "visa.cancellation_requested": request_cancellation,
        "visa.cancellation_accepted": accept_cancellation,
    }
