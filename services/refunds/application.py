"""The refunds application: refund cases from every origin, the saga with the
payments service (hold -> order -> bank answer), parked bank answers, SLA timers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypedDict
from uuid import UUID

from services.kit.calendar import BusinessCalendar
from services.kit.envelope import Envelope
from services.kit.ingress import Handler, Reading, TimerHandler, UnitOfWork
from services.kit.rules import Rules
from services.kit.store import LedgerApplication, rules_of
from services.refunds.domain import (
    ParkedReturn,
    PaymentRef,
    RefundCase,
    RefundsError,
    StatusMismatch,
    UnknownRefund,
    visa_refund_id,
)

OVERDUE = "refund.overdue"
DECLINED_RULES = {"JAWAZAT_QUEUE": "declined_by_jawazat", "MANUAL_REVIEW": "declined_by_mofa"}
STATUS_MISMATCH = "visa.status_mismatch"
VISA_AGENCY, VISA_SERVICE = "MUSANED", "VISA_FEE"
#: The route and first state of a request, by the channel it came through.
REQUEST_ROUTES = {"BANK": ("BANK", "AWAITING_HOLD"), "ABSHER": ("JAWAZAT", "JAWAZAT_QUEUE")}


class CaseView(TypedDict):
    refund_id: str
    state: str
    route: str
    amount: int
    deadline: datetime
    overdue: bool
    next_step_owner: str | None


class RefundsApplication(LedgerApplication):
    name = "refunds"

    def case(self, refund_id: str) -> CaseView | None:
        case: RefundCase | None = self.find(RefundCase.create_id(refund_id))
        if case is None:
            return None
        return CaseView(refund_id=refund_id, state=case.state, route=case.route, amount=case.amount,
                        deadline=case.deadline, overdue=case.overdue, next_step_owner=case.next_step_owner)


class Refunds:
    """The command handlers, bound to the rules and the business calendar."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.calendar = BusinessCalendar.from_rules(rules)

    def open_case(self, uow: UnitOfWork, *, refund_id: str, route: str, state: str, facts: dict[str, Any],
                  starts_at: datetime, reference: dict[str, str], origin: dict[str, Any]) -> RefundCase:
        rule = self.rules.route(route)
        deadline = self.calendar.deadline(rule, starts_at)
        case = RefundCase(refund_id=refund_id, route=route, state=state, deadline=deadline, route_owner=rule.owner,
                          rules_version=self.rules.version, reference=reference, origin=origin, **facts)
        uow.add(case)
        uow.schedule(OVERDUE, refund_id, deadline)
        return case

    def request(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """A citizen asked for a refund at their bank (BANK) or in Absher (ABSHER)."""
        d = envelope.data
        facts = {"beneficiary_id": d["beneficiary_id"], "agency": d["agency"], "service_code": d["service_code"],
                 "amount": d["amount"], "iban": d["iban"], "channel": d["channel"],
                 "requested_at": envelope.at("requested_at")}
        existing: RefundCase | None = uow.get(RefundCase.create_id(d["request_id"]))
        if existing is not None:
            existing.check_same_request(**facts)
            return
        route, state = REQUEST_ROUTES[d["channel"]]
        self.open_case(uow, refund_id=d["request_id"], route=route, state=state,
                       facts={**facts, "third_party_payer": False}, starts_at=facts["requested_at"],
                       reference={"request_id": d["request_id"]}, origin=envelope.origin)

    def held(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """The payments service held the amount: the bank is told to pay."""
        case = _case(uow, envelope.data["refund_id"])
        if case is None:
            return  # a hold for a request this service never opened cannot happen; nothing to order
        case.order(at=envelope.time, origin=envelope.origin)
        self._apply_parked(uow, case)

    def hold_refused(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """The request broke a balance rule: closed with the rule that failed."""
        d = envelope.data
        case = _case(uow, d["refund_id"])
        if case is None:
            return
        case.reject(rule=d["rule"], reason=d["reason"], at=envelope.time, decided_by="payments",
                    origin=envelope.origin)
        uow.cancel(OVERDUE, case.refund_id)

    def completed(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """The bank paid the order."""
        d = envelope.data
        self._bank_answer(uow, envelope, "completed", {
            "bank_reference": d["bank_reference"], "amount": d["amount"], "iban": d["iban"],
            "completed_at": envelope.at("completed_at")})

    def failed(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """The bank could not pay the order."""
        d = envelope.data
        self._bank_answer(uow, envelope, "failed", {
            "bank_reference": d["bank_reference"], "reason": d["reason"], "failed_at": envelope.at("failed_at")})

    def _bank_answer(self, uow: UnitOfWork, envelope: Envelope, outcome: str, facts: dict[str, Any]) -> None:
        """Close the ordered case; an answer to an order that does not exist yet is parked."""
        refund_id = envelope.data["refund_id"]
        case = _case(uow, refund_id)
        if case is None or case.state in {"AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW"}:
            _park(uow, refund_id, outcome, facts, envelope.origin)
            return
        case.check_answering_bank(envelope.source)
        close = case.complete if outcome == "completed" else case.fail
        close(**facts, origin=envelope.origin)
        uow.cancel(OVERDUE, case.refund_id)

    def approve(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Staff approved a queued refund (Jawazat: Absher; MoFA: manual review): the bank is ordered to pay.
        Above the rules' four-eyes amount a Jawazat approval needs a second, different employee first.
        Repeats change nothing."""
        d = envelope.data
        case = _case(uow, d["refund_id"])
        if case is None:
            raise UnknownRefund(f"refund {d['refund_id']} is not known to the ledger")
        case.check_awaits_decision(d["queue"])
        four_eyes = d["queue"] == "JAWAZAT_QUEUE" and self.rules.needs_four_eyes(case.amount)
        case.approve(by=d["decided_by"], at=envelope.at("decided_at"), origin=envelope.origin, four_eyes=four_eyes)
        self._apply_parked(uow, case)

    def decline(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Staff refused a queued refund, with the reason the citizen is told."""
        d = envelope.data
        case = _case(uow, d["refund_id"])
        if case is None:
            raise UnknownRefund(f"refund {d['refund_id']} is not known to the ledger")
        case.check_awaits_decision(d["queue"])
        case.reject(rule=DECLINED_RULES[d["queue"]], reason=d["reason"], at=envelope.at("decided_at"),
                    decided_by=d["decided_by"], origin=envelope.origin)
        uow.cancel(OVERDUE, case.refund_id)

    def payment_recorded(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Remember the account that paid; open the visa refunds that waited for it."""
        d = envelope.data
        ref: PaymentRef | None = uow.get(PaymentRef.create_id(d["payment_id"]))
        if ref is None:
            ref = PaymentRef(payment_id=d["payment_id"])
            uow.add(ref)
        for refund in ref.record(payer_iban=d["payer_iban"], payer_id=d["payer_id"]):
            self._open_visa_case(uow, refund, ref)

    def visa_refund_started(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Musaned accepted a refundable visa's cancellation: the refund case opens (with the paying account)."""
        d = envelope.data
        refund = {**{k: d[k] for k in ("sponsor_id", "export_number", "serial_number", "payment_id", "amount",
                                       "route", "requested_at", "accepted_at", "channel")},
                  "refund_id": visa_refund_id(d["sponsor_id"], d["export_number"], d["serial_number"]),
                  "origin": envelope.origin}
        if _case(uow, refund["refund_id"]) is not None:
            return  # started before: a repeat changes nothing
        ref: PaymentRef | None = uow.get(PaymentRef.create_id(d["payment_id"]))
        if ref is None:
            ref = PaymentRef(payment_id=d["payment_id"])
            uow.add(ref)
        if ref.known:
            self._open_visa_case(uow, refund, ref)
        else:
            ref.wait(refund)

    def _open_visa_case(self, uow: UnitOfWork, refund: dict[str, Any], ref: PaymentRef) -> None:
        accepted_at = datetime.fromisoformat(refund["accepted_at"])
        route = refund["route"]
        assert ref.payer_iban is not None and ref.payer_id is not None
        case = self.open_case(
            uow, refund_id=refund["refund_id"], route=route,
            state="MANUAL_REVIEW" if route == "MANUAL_REVIEW" else "ACCEPTED",
            facts={"beneficiary_id": refund["sponsor_id"], "agency": VISA_AGENCY, "service_code": VISA_SERVICE,
                   "amount": refund["amount"], "iban": ref.payer_iban, "channel": refund["channel"],
                   "requested_at": datetime.fromisoformat(refund["requested_at"]),
                   "third_party_payer": ref.payer_id != refund["sponsor_id"]},
            starts_at=accepted_at, origin=refund["origin"],
            reference={k: refund[k] for k in ("sponsor_id", "export_number", "serial_number", "payment_id")})
        if route != "MANUAL_REVIEW":
            case.order(at=accepted_at, origin=refund["origin"])
            self._apply_parked(uow, case)

    def visa_status_changed(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """FEES_RESTORED starts a watch: no bank completion by the route's deadline is a status mismatch."""
        d = envelope.data
        if d["status"] != "FEES_RESTORED":
            return
        refund_id = visa_refund_id(d["sponsor_id"], d["export_number"], d["serial_number"])
        changed_at = envelope.at("changed_at")
        case = _case(uow, refund_id)
        due = case.deadline if case is not None else self.calendar.deadline(self.rules.route("MOFA"), changed_at)
        key = json.dumps([d["sponsor_id"], d["export_number"], d["serial_number"], changed_at.isoformat()])
        uow.schedule(STATUS_MISMATCH, key, due)

    def check_status(self, uow: UnitOfWork, key: str, _due_at: datetime, now: datetime) -> None:
        """Timer: fees restored by NIC's status, but did the money arrive?"""
        sponsor_id, export_number, serial_number, changed_at = json.loads(key)
        refund_id = visa_refund_id(sponsor_id, export_number, serial_number)
        case = _case(uow, refund_id)
        if case is not None and case.state == "COMPLETED":
            return
        if case is not None and case.open and now < case.deadline:
            uow.schedule(STATUS_MISMATCH, key, case.deadline)  # the case opened later: watch its own deadline
            return
        if uow.get(StatusMismatch.create_id(refund_id)) is None:
            uow.add(StatusMismatch(
                refund_id=refund_id, sponsor_id=sponsor_id, export_number=export_number,
                serial_number=serial_number, status="FEES_RESTORED",
                status_changed_at=datetime.fromisoformat(changed_at),
                deadline=case.deadline if case else _due_at, refund_state=case.state if case else None,
                owner=(case.next_step_owner or case.route_owner) if case else VISA_AGENCY, flagged_at=now))

    def _apply_parked(self, uow: UnitOfWork, case: RefundCase) -> None:
        parked: ParkedReturn | None = uow.get(ParkedReturn.create_id(case.refund_id))
        if parked is None or parked.applied:
            return
        facts = dict(parked.facts)
        for name in ("completed_at", "failed_at"):
            if isinstance(facts.get(name), str):
                facts[name] = datetime.fromisoformat(facts[name])
        try:
            case.check_answering_bank(parked.origin["source"])
            if parked.outcome == "completed":
                case.complete(**facts, origin=parked.origin)
            else:
                case.fail(**facts, origin=parked.origin)
        except RefundsError as error:
            parked.discard(reason=f"{error.reason_code}: {error}")
            return
        parked.mark_applied()
        uow.cancel(OVERDUE, case.refund_id)

    def overdue(self, uow: UnitOfWork, refund_id: str, _due_at: datetime, now: datetime) -> None:
        case = _case(uow, refund_id)
        if case is not None:
            case.mark_overdue(at=now)


def _case(uow: UnitOfWork, refund_id: str) -> RefundCase | None:
    return uow.get(RefundCase.create_id(refund_id))


def _park(uow: UnitOfWork, refund_id: str, outcome: str, facts: dict[str, Any], origin: dict[str, Any]) -> None:
    """Keep a bank answer whose order does not exist yet; the first answer parked stands."""
    if uow.get(ParkedReturn.create_id(refund_id)) is None:
        stored = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in facts.items()}
        uow.add(ParkedReturn(refund_id=refund_id, outcome=outcome, facts=stored, origin=origin))


def _refunds(app: LedgerApplication) -> Refunds:
    return Refunds(rules_of(app))


def _case_and_parked(envelope: Envelope) -> tuple[UUID, UUID]:
    refund_id = envelope.data["refund_id"]
    return RefundCase.create_id(refund_id), ParkedReturn.create_id(refund_id)


def _visa_case(envelope: Envelope) -> tuple[UUID, ...]:
    d = envelope.data
    case = RefundCase.create_id(visa_refund_id(d["sponsor_id"], d["export_number"], d["serial_number"]))
    return (case, PaymentRef.create_id(d["payment_id"])) if "payment_id" in d else (case,)


def handlers(app: LedgerApplication) -> dict[str, Handler]:
    """Each handler with the aggregates it reads (a batch's are loaded in one query)."""
    refunds = _refunds(app)
    return {
        "refund.requested": Reading(refunds.request, lambda e: (RefundCase.create_id(e.data["request_id"]),)),
        "refund.completed": Reading(refunds.completed, _case_and_parked),
        "refund.failed": Reading(refunds.failed, _case_and_parked),
        "ledger.balance.held": Reading(refunds.held, _case_and_parked),
        "ledger.balance.hold_refused": Reading(refunds.hold_refused, _case_and_parked),
        "refund.approved": Reading(refunds.approve, _case_and_parked),
        "refund.declined": Reading(refunds.decline, _case_and_parked),
        "ledger.payment.recorded": Reading(refunds.payment_recorded,
                                           lambda e: (PaymentRef.create_id(e.data["payment_id"]),)),
        "ledger.visa.refund_started": Reading(refunds.visa_refund_started, _visa_case),
        "ledger.visa.status_changed": Reading(refunds.visa_status_changed, _visa_case),
    }


def timer_handlers(app: LedgerApplication) -> dict[str, TimerHandler]:
    refunds = _refunds(app)
    return {OVERDUE: refunds.overdue, STATUS_MISMATCH: refunds.check_status}
