"""The refunds application: commands from inbound events."""

from __future__ import annotations

from services.kit.envelope import Envelope
from services.kit.ingress import Handler, UnitOfWork
from services.kit.store import LedgerApplication
from services.refunds.domain import RefundCase, UnknownRefund


class RefundsApplication(LedgerApplication):
    name = "refunds"


def request_refund(uow: UnitOfWork, envelope: Envelope) -> None:
    d = envelope.data
    facts = {"beneficiary_id": d["beneficiary_id"], "agency": d["agency"], "service_code": d["service_code"],
             "amount": d["amount"], "iban": d["iban"], "channel": d["channel"],
             "requested_at": envelope.at("requested_at")}
    existing: RefundCase | None = uow.get(RefundCase.create_id(d["request_id"]))
    if existing is not None:
        existing.check_same_request(**facts)
        return
    uow.add(RefundCase(refund_id=d["request_id"], origin=envelope.origin, **facts))


def _case(uow: UnitOfWork, refund_id: str) -> RefundCase:
    case: RefundCase | None = uow.get(RefundCase.create_id(refund_id))
    if case is None:
        raise UnknownRefund(f"refund {refund_id} is not known to the ledger")
    return case


def complete_refund(uow: UnitOfWork, envelope: Envelope) -> None:
    d = envelope.data
    _case(uow, d["refund_id"]).complete(bank_reference=d["bank_reference"], amount=d["amount"], iban=d["iban"],
                                        completed_at=envelope.at("completed_at"), origin=envelope.origin)


def fail_refund(uow: UnitOfWork, envelope: Envelope) -> None:
    d = envelope.data
    _case(uow, d["refund_id"]).fail(bank_reference=d["bank_reference"], reason=d["reason"],
                                    failed_at=envelope.at("failed_at"), origin=envelope.origin)


def handlers(_: LedgerApplication) -> dict[str, Handler]:
    return {"refund.requested": request_refund, "refund.completed": complete_refund,
            "refund.failed": fail_refund}
