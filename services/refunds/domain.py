"""Refunds domain: one refund case per request, from its origin to the bank's
answer, with its route, SLA deadline and the agency owning the next step.

Origins: a bank-channel request (route BANK: the payments service must hold
the amount first), an Absher pre-SADAD request (route JAWAZAT: an employee
decides), a visa cancellation (routes AUTOMATIC, MOFA, MANUAL_REVIEW).
Times are passed in; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from services.kit import liaisons

NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/refunds")

#: States in which the case waits for someone; the others are closed.
OPEN_STATES = frozenset({"AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW", "ORDERED"})


class RefundsError(Exception):
    """Raised when a refunds business rule is broken."""

    reason_code = "business_rule"


class UnknownRefund(RefundsError):
    """Raised when an event names a refund the ledger does not know."""

    reason_code = "unknown_refund"


class RefundConflict(RefundsError):
    """Raised when a refund request id is reused with different facts."""

    reason_code = "refund_conflict"


class ReturnMismatch(RefundsError):
    """Raised when a bank return's amount or IBAN differs from the order it answers."""

    reason_code = "return_mismatch"


class NotAwaitingDecision(RefundsError):
    """Raised when an employee decides a refund that is not in their queue."""

    reason_code = "not_awaiting_decision"


class SameApprover(RefundsError):
    """Raised when the employee who made a first approval tries to be its second approver too."""

    reason_code = "four_eyes_same_approver"


class AlreadyClosed(RefundsError):
    """Raised when a bank return arrives for a refund that was already closed differently."""

    reason_code = "refund_already_closed"


class WrongBank(RefundsError):
    """Raised when a bank answers for a refund to an account held at another bank."""

    reason_code = "wrong_bank"


class RefundCase(Aggregate):
    """One refund, from its origin to the bank's answer."""

    @staticmethod
    def create_id(refund_id: str) -> UUID:
        return uuid5(NAMESPACE, f"refund:{refund_id}")

    @event("Opened")
    def __init__(self, *, refund_id: str, beneficiary_id: str, agency: str, service_code: str, amount: int,
                 iban: str, channel: str, route: str, state: str, requested_at: datetime,
                 deadline: datetime, route_owner: str, rules_version: str, third_party_payer: bool,
                 reference: dict[str, str], origin: dict[str, Any]) -> None:
        self.refund_id = refund_id
        self.beneficiary_id = beneficiary_id
        self.agency = agency
        self.service_code = service_code
        self.amount = amount
        self.iban = iban
        self.channel = channel
        self.route = route
        self.state = state
        self.requested_at = requested_at
        self.deadline = deadline
        self.route_owner = route_owner
        self.overdue = False
        self.bank_reference: str | None = None
        self.closed_at: datetime | None = None
        self.first_approved_by: str | None = None  # four eyes: the maker, waiting for a different checker

    FACTS = ("beneficiary_id", "agency", "service_code", "amount", "iban", "channel", "requested_at")

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def next_step_owner(self) -> str | None:
        """Who must act next, from the responsibility matrix (``reference/responsibility.json``)."""
        return liaisons.responsibility().refund_owner(self.state, self.route) if self.open else None

    def check_answering_bank(self, source: str) -> None:
        """Raise WrongBank unless ``source`` (``bank/NN``) holds the refund's account: a bank's key
        signs only its own answers, and ``refund.failed`` names no account to check it against."""
        expected = f"bank/{self.iban[4:6]}"
        if source != expected:
            raise WrongBank(f"refund {self.refund_id} is paid into an account at {expected}; {source} cannot answer it")

    def check_same_request(self, **facts: Any) -> None:
        """Raise RefundConflict unless ``facts`` repeat the original request."""
        different = sorted(k for k in self.FACTS if getattr(self, k) != facts[k])
        if different:
            raise RefundConflict(f"refund {self.refund_id} was already requested with different "
                                 f"{', '.join(different)}")

    def order(self, *, at: datetime, origin: dict[str, Any], decided_by: str | None = None) -> None:
        """The money may go: the bank is told what to pay (once)."""
        if self.state in {"ACCEPTED", "AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW"}:
            self._ordered(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id, amount=self.amount,
                          iban=self.iban, route=self.route, deadline=self.deadline, ordered_at=at,
                          decided_by=decided_by, origin=origin)

    @event("Ordered")
    def _ordered(self, refund_id: str, beneficiary_id: str, amount: int, iban: str, route: str,
                 deadline: datetime, ordered_at: datetime, decided_by: str | None, origin: dict[str, Any]) -> None:
        self.state = "ORDERED"

    def check_awaits_decision(self, queue: str) -> None:
        """Raise NotAwaitingDecision unless the case waits in ``queue`` (e.g. JAWAZAT_QUEUE)."""
        queued_route = {"JAWAZAT_QUEUE": "JAWAZAT", "MANUAL_REVIEW": "MANUAL_REVIEW"}.get(queue)
        decided = self.state in {"ORDERED", "REJECTED", "COMPLETED", "FAILED"} and self.route == queued_route
        if self.state != queue and not decided:  # a repeated decision on a decided case changes nothing
            raise NotAwaitingDecision(f"refund {self.refund_id} is {self.state.lower()}, not in the {queue} queue")

    def approve(self, *, by: str, at: datetime, origin: dict[str, Any], four_eyes: bool) -> None:
        """An employee approves the queued case. With ``four_eyes`` (above the rules' amount) the first
        approval is recorded and the case stays in the queue; the bank is ordered only when a second,
        different employee approves. The maker can never be the checker. Once ordered, repeats change nothing."""
        if self.state not in {"JAWAZAT_QUEUE", "MANUAL_REVIEW"}:
            return
        if four_eyes:
            if self.first_approved_by is None:
                self._first_approved(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id,
                                     amount=self.amount, queue=self.state, approved_by=by, approved_at=at,
                                     origin=origin)
                return
            self.check_not_maker(by)
        self.order(at=at, origin=origin, decided_by=by)

    def check_not_maker(self, by: str) -> None:
        """Raise SameApprover if ``by`` made the first approval of this case."""
        if self.first_approved_by is not None and by == self.first_approved_by:
            raise SameApprover(f"refund {self.refund_id}: {by} made the first approval; four eyes need a "
                               f"second, different employee to approve it")

    @event("FirstApproved")
    def _first_approved(self, refund_id: str, beneficiary_id: str, amount: int, queue: str, approved_by: str,
                        approved_at: datetime, origin: dict[str, Any]) -> None:
        self.first_approved_by = approved_by

    def reject(self, *, rule: str, reason: str, at: datetime, decided_by: str, origin: dict[str, Any]) -> None:
        """The request broke a rule (or an employee refused it): closed with the reason, once."""
        if self.state in {"AWAITING_HOLD", "JAWAZAT_QUEUE", "MANUAL_REVIEW"}:
            self._rejected(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id, rule=rule, reason=reason,
                           decided_by=decided_by, rejected_at=at, origin=origin)

    @event("Rejected")
    def _rejected(self, refund_id: str, beneficiary_id: str, rule: str, reason: str, decided_by: str,
                  rejected_at: datetime, origin: dict[str, Any]) -> None:
        self.state = "REJECTED"
        self.closed_at = rejected_at

    @property
    def awaits_bank(self) -> bool:
        return self.state == "ORDERED"

    def check_return_matches(self, *, amount: int, iban: str) -> None:
        if amount != self.amount or iban != self.iban:
            raise ReturnMismatch(f"refund {self.refund_id} was ordered for {self.amount} halalas to the account "
                                 f"ending {self.iban[-4:]}; the bank returned {amount} to the account ending "
                                 f"{iban[-4:]}")

    def complete(self, *, bank_reference: str, amount: int, iban: str, completed_at: datetime,
                 origin: dict[str, Any]) -> None:
        """The bank paid the order."""
        self.check_return_matches(amount=amount, iban=iban)
        if self.state == "COMPLETED" and self.bank_reference == bank_reference:
            return
        self._check_awaits_bank()
        self._completed(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id, bank_reference=bank_reference,
                        amount=amount, completed_at=completed_at, on_time=completed_at <= self.deadline,
                        origin=origin)

    @event("Completed")
    def _completed(self, refund_id: str, beneficiary_id: str, bank_reference: str, amount: int,
                   completed_at: datetime, on_time: bool, origin: dict[str, Any]) -> None:
        self.state = "COMPLETED"
        self.bank_reference = bank_reference
        self.closed_at = completed_at

    def fail(self, *, bank_reference: str, reason: str, failed_at: datetime, origin: dict[str, Any]) -> None:
        """The bank could not pay the order."""
        if self.state == "FAILED" and self.bank_reference == bank_reference:
            return
        self._check_awaits_bank()
        self._failed(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id, bank_reference=bank_reference,
                     reason=reason, failed_at=failed_at, origin=origin)

    @event("Failed")
    def _failed(self, refund_id: str, beneficiary_id: str, bank_reference: str, reason: str,
                failed_at: datetime, origin: dict[str, Any]) -> None:
        self.state = "FAILED"
        self.bank_reference = bank_reference
        self.closed_at = failed_at

    def _check_awaits_bank(self) -> None:
        if not self.awaits_bank:
            raise AlreadyClosed(f"refund {self.refund_id} is {self.state.lower()}, not awaiting the bank")

    def mark_overdue(self, *, at: datetime) -> None:
        """Past the deadline and still open: the citizen is told to call 19990. Once."""
        if self.open and not self.overdue and at >= self.deadline:
            self._overdue(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id, agency=self.agency,
                          route=self.route, state=self.state, owner=self.next_step_owner or self.route_owner,
                          deadline=self.deadline, marked_at=at)

    @event("Overdue")
    def _overdue(self, refund_id: str, beneficiary_id: str, agency: str, route: str, state: str, owner: str,
                 deadline: datetime, marked_at: datetime) -> None:
        self.overdue = True


class ParkedReturn(Aggregate):
    """A bank answer that arrived before the order it answers: kept, applied once the order exists."""

    @staticmethod
    def create_id(refund_id: str) -> UUID:
        return uuid5(NAMESPACE, f"parked-return:{refund_id}")

    @event("Parked")
    def __init__(self, *, refund_id: str, outcome: str, facts: dict[str, Any], origin: dict[str, Any]) -> None:
        self.refund_id = refund_id
        self.outcome = outcome          # "completed" | "failed"
        self.facts = facts
        self.origin = origin
        self.applied = False

    def mark_applied(self) -> None:
        if not self.applied:
            self._applied(refund_id=self.refund_id)

    @event("Applied")
    def _applied(self, refund_id: str) -> None:
        self.applied = True

    def discard(self, *, reason: str) -> None:
        """The order exists but the parked answer does not match it: kept on record, not applied."""
        if not self.applied:
            self._discarded(refund_id=self.refund_id, reason=reason)

    @event("Discarded")
    def _discarded(self, refund_id: str, reason: str) -> None:
        self.applied = True


def visa_refund_id(sponsor_id: str, export_number: str, serial_number: str) -> str:
    """The refund id of a visa fee refund: derived from the visa's key (so every service and a
    re-sent acceptance agree) but opaque, so quoting it never discloses the sponsor's ID."""
    digest = uuid5(NAMESPACE, f"visa-refund:{sponsor_id}:{export_number}:{serial_number}").hex
    return f"V-{digest[:16].upper()}"


class PaymentRef(Aggregate):
    """What the refunds service knows of a payment: the account that paid (refunds go back there).

    A visa refund that starts before the payment is known waits here and
    opens as soon as the payment arrives.
    """

    @staticmethod
    def create_id(payment_id: str) -> UUID:
        return uuid5(NAMESPACE, f"payment:{payment_id}")

    @event("Noted")
    def __init__(self, *, payment_id: str) -> None:
        self.payment_id = payment_id
        self.payer_iban: str | None = None
        self.payer_id: str | None = None
        self.pending: list[dict[str, Any]] = []

    @property
    def known(self) -> bool:
        return self.payer_iban is not None

    def record(self, *, payer_iban: str, payer_id: str) -> list[dict[str, Any]]:
        """The payment's facts arrived; the refunds that waited for them."""
        if self.known:
            return []
        waiting = list(self.pending)
        self._recorded(payment_id=self.payment_id, payer_iban=payer_iban, payer_id=payer_id)
        return waiting

    @event("Recorded")
    def _recorded(self, payment_id: str, payer_iban: str, payer_id: str) -> None:
        self.payer_iban = payer_iban
        self.payer_id = payer_id
        self.pending = []

    def wait(self, refund: dict[str, Any]) -> None:
        """Keep a refund until the payment's facts arrive (once per refund id)."""
        if all(p["refund_id"] != refund["refund_id"] for p in self.pending):
            self._waiting(payment_id=self.payment_id, refund=refund)

    @event("RefundWaiting")
    def _waiting(self, payment_id: str, refund: dict[str, Any]) -> None:
        self.pending = [*self.pending, refund]


class StatusMismatch(Aggregate):
    """NIC says the visa's fees were restored, but no bank completion arrived within the deadline."""

    @staticmethod
    def create_id(refund_id: str) -> UUID:
        return uuid5(NAMESPACE, f"status-mismatch:{refund_id}")

    @event("Flagged")
    def __init__(self, *, refund_id: str, sponsor_id: str, export_number: str, serial_number: str, status: str,
                 status_changed_at: datetime, deadline: datetime, refund_state: str | None, owner: str,
                 flagged_at: datetime) -> None:
        self.refund_id = refund_id
