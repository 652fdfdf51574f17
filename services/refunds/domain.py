"""Refunds domain: a refund case per request and how the bank closed it.
Times are passed in; no I/O, no clock.

This is the recording core; eligibility rules, holds, orders, SLA clocks and
the Jawazat queue build on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/refunds")


class RefundsError(Exception):
    """Raised when a refunds business rule is broken."""

    reason_code = "business_rule"


class UnknownRefund(RefundsError):
    """Raised when a bank return names a refund the ledger does not know."""

    reason_code = "unknown_refund"


class RefundConflict(RefundsError):
    """Raised when a refund request id is reused with different facts."""

    reason_code = "refund_conflict"


class ReturnMismatch(RefundsError):
    """Raised when a bank return's amount or IBAN differs from the refund's."""

    reason_code = "return_mismatch"


class AlreadyClosed(RefundsError):
    """Raised when a bank return arrives for a refund that was already closed differently."""

    reason_code = "refund_already_closed"


class RefundCase(Aggregate):
    """One refund, from request to the bank's answer."""

    @staticmethod
    def create_id(refund_id: str) -> UUID:
        return uuid5(NAMESPACE, f"refund:{refund_id}")

    @event("Requested")
    def __init__(self, *, refund_id: str, beneficiary_id: str, agency: str, service_code: str, amount: int,
                 iban: str, channel: str, requested_at: datetime, origin: dict[str, Any]) -> None:
        self.refund_id = refund_id
        self.beneficiary_id = beneficiary_id
        self.agency = agency
        self.service_code = service_code
        self.amount = amount
        self.iban = iban
        self.channel = channel
        self.requested_at = requested_at
        self.status = "REQUESTED"
        self.closed_at: datetime | None = None
        self.bank_reference: str | None = None

    FACTS = ("beneficiary_id", "agency", "service_code", "amount", "iban", "channel", "requested_at")

    def check_same_request(self, **facts: Any) -> None:
        different = sorted(k for k in self.FACTS if getattr(self, k) != facts[k])
        if different:
            raise RefundConflict(f"refund {self.refund_id} was already requested with different "
                                 f"{', '.join(different)}")

    def complete(self, *, bank_reference: str, amount: int, iban: str, completed_at: datetime,
                 origin: dict[str, Any]) -> None:
        if amount != self.amount or iban != self.iban:
            raise ReturnMismatch(f"refund {self.refund_id} was for {self.amount} halalas to "
                                 f"{self.iban[-4:]}; the bank returned {amount} to {iban[-4:]}")
        if self.status == "COMPLETED" and self.bank_reference == bank_reference:
            return
        self._check_open()
        self._completed(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id,
                        bank_reference=bank_reference, amount=amount, completed_at=completed_at, origin=origin)

    @event("Completed")
    def _completed(self, refund_id: str, beneficiary_id: str, bank_reference: str, amount: int,
                   completed_at: datetime, origin: dict[str, Any]) -> None:
        self.status = "COMPLETED"
        self.bank_reference = bank_reference
        self.closed_at = completed_at

    def fail(self, *, bank_reference: str, reason: str, failed_at: datetime, origin: dict[str, Any]) -> None:
        if self.status == "FAILED" and self.bank_reference == bank_reference:
            return
        self._check_open()
        self._failed(refund_id=self.refund_id, beneficiary_id=self.beneficiary_id,
                     bank_reference=bank_reference, reason=reason, failed_at=failed_at, origin=origin)

    @event("Failed")
    def _failed(self, refund_id: str, beneficiary_id: str, bank_reference: str, reason: str,
                failed_at: datetime, origin: dict[str, Any]) -> None:
        self.status = "FAILED"
        self.bank_reference = bank_reference
        self.closed_at = failed_at

    def _check_open(self) -> None:
        if self.status != "REQUESTED":
            raise AlreadyClosed(f"refund {self.refund_id} is already {self.status.lower()}")
