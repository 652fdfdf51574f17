"""Payments domain: the balance of (beneficiary, agency, service) and the
payments that credit it.

available = credited - charged - held - refunded, and never below zero.
Times are passed in; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/payments")


class PaymentsError(Exception):
    """Raised when a payments business rule is broken."""

    reason_code = "business_rule"


class PaymentConflict(PaymentsError):
    """Raised when a payment id is recorded again with different facts."""

    reason_code = "payment_conflict"


class UnknownPayment(PaymentsError):
    """Raised when an event names a payment the ledger has not recorded."""

    reason_code = "unknown_payment"


class InsufficientBalance(PaymentsError):
    """Raised when a movement would make the available balance negative."""

    reason_code = "insufficient_balance"


class ChargeConflict(PaymentsError):
    """Raised when a charge id is charged again with different facts."""

    reason_code = "charge_conflict"


class Payment(Aggregate):
    """One payment as the bank / SADAD reported it, and whether NIC reflected it."""

    @staticmethod
    def create_id(payment_id: str) -> UUID:
        return uuid5(NAMESPACE, f"payment:{payment_id}")

    @event("Recorded")
    def __init__(
        self,
        # Not keyword-only: eventsourcing treats every keyword-only parameter as required, and payments
        # recorded before the SADAD bill number existed must still rebuild (they take this default).
        sadad_bill_number: str | None = None,
        *,
        payment_id: str,
        beneficiary_id: str,
        payer_id: str,
        payer_iban: str,
        agency: str,
        service_code: str,
        amount: int,
        channel: str,
        paid_at: datetime,
        origin: dict[str, Any],
    ) -> None:
        self.payment_id = payment_id
        self.sadad_bill_number = sadad_bill_number
        self.beneficiary_id = beneficiary_id
        self.payer_id = payer_id
        self.payer_iban = payer_iban
        self.agency = agency
        self.service_code = service_code
        self.amount = amount
        self.channel = channel
        self.paid_at = paid_at
        self.third_party_payer = payer_id != beneficiary_id
        self.acknowledged_at: datetime | None = None
        self.unreflected_since: datetime | None = None

    FACTS = ("beneficiary_id", "payer_id", "payer_iban", "agency", "service_code", "amount",
             "channel", "paid_at")

    def check_same_facts(self, **facts: Any) -> None:
        """Raise PaymentConflict unless ``facts`` repeat what was recorded."""
        different = sorted(k for k in self.FACTS if getattr(self, k) != facts[k])
        if different:
            raise PaymentConflict(
                f"payment {self.payment_id} was already recorded with different "
                f"{', '.join(different)}")

    def acknowledge(self, acknowledged_at: datetime, origin: dict[str, Any]) -> None:
        """NIC / the agency system reflected the payment. Repeats change nothing.

        A payment flagged as not reflected is resolved by its acknowledgement.
        """
        if self.acknowledged_at is None:
            self._acknowledged(payment_id=self.payment_id, beneficiary_id=self.beneficiary_id,
                               acknowledged_at=acknowledged_at, origin=origin)
            if self.unreflected_since is not None:
                self._unreflected_resolved(payment_id=self.payment_id, beneficiary_id=self.beneficiary_id,
                                           agency=self.agency, acknowledged_at=acknowledged_at,
                                           unreflected_since=self.unreflected_since)

    @event("Acknowledged")
    def _acknowledged(self, payment_id: str, beneficiary_id: str, acknowledged_at: datetime,
                      origin: dict[str, Any]) -> None:
        self.acknowledged_at = acknowledged_at

    def mark_unreflected(self, *, due_at: datetime, rules_version: str) -> None:
        """No acknowledgement by ``due_at``: the payment is not reflected at the agency. Once."""
        if self.acknowledged_at is None and self.unreflected_since is None:
            self._unreflected(payment_id=self.payment_id, beneficiary_id=self.beneficiary_id, agency=self.agency,
                              service_code=self.service_code, amount=self.amount, channel=self.channel,
                              paid_at=self.paid_at, due_at=due_at, rules_version=rules_version)

    @event("Unreflected")
    def _unreflected(self, payment_id: str, beneficiary_id: str, agency: str, service_code: str, amount: int,
                     channel: str, paid_at: datetime, due_at: datetime, rules_version: str) -> None:
        self.unreflected_since = due_at

    @event("UnreflectedResolved")
    def _unreflected_resolved(self, payment_id: str, beneficiary_id: str, agency: str, acknowledged_at: datetime,
                              unreflected_since: datetime) -> None:
        pass


def totals(credited: int, charged: int, held: int, refunded: int) -> dict[str, int]:
    """A balance's totals, with the derived ``available``."""
    return {"credited": credited, "charged": charged, "held": held, "refunded": refunded,
            "available": credited - charged - held - refunded}


class Balance(Aggregate):
    """The money of one beneficiary for one service at one agency."""

    @staticmethod
    def create_id(beneficiary_id: str, agency: str, service_code: str) -> UUID:
        return uuid5(NAMESPACE, f"balance:{beneficiary_id}:{agency}:{service_code}")

    @event("Opened")
    def __init__(self, *, beneficiary_id: str, agency: str, service_code: str) -> None:
        self.beneficiary_id = beneficiary_id
        self.agency = agency
        self.service_code = service_code
        self.credited = self.charged = self.held = self.refunded = 0
        self.charges: dict[str, int] = {}
        self.payer_ibans: list[str] = []

    @property
    def available(self) -> int:
        return self.credited - self.charged - self.held - self.refunded

    def totals(self, **changes: int) -> dict[str, int]:
        current = {"credited": self.credited, "charged": self.charged, "held": self.held,
                   "refunded": self.refunded}
        current.update(changes)
        return totals(**current)

    def check_can_cover(self, amount: int) -> None:
        if amount > self.available:
            raise InsufficientBalance(
                f"{amount} halalas exceed the available balance of {self.available} halalas "
                f"for {self.service_code} at {self.agency}")

    @property
    def key(self) -> dict[str, str]:
        """The natural key, repeated in every movement event so each stands alone."""
        return {"beneficiary_id": self.beneficiary_id, "agency": self.agency,
                "service_code": self.service_code}

    def credit(self, *, payment_id: str, payer_iban: str, amount: int, occurred_at: datetime,
               origin: dict[str, Any]) -> None:
        self._credited(key=self.key, payment_id=payment_id, payer_iban=payer_iban, amount=amount,
                       occurred_at=occurred_at, origin=origin,
                       balance_after=self.totals(credited=self.credited + amount))

    @event("Credited")
    def _credited(self, key: dict[str, str], payment_id: str, payer_iban: str, amount: int,
                  occurred_at: datetime, origin: dict[str, Any], balance_after: dict[str, int]) -> None:
        self.credited = balance_after["credited"]
        if payer_iban not in self.payer_ibans:
            self.payer_ibans.append(payer_iban)

    def refusal(self, *, iban: str, amount: int) -> tuple[str, str] | None:
        """Why a refund of ``amount`` to ``iban`` may not be held here, or None.

        The money goes back only to an account that paid into this balance,
        and never more than is available.
        """
        if iban not in self.payer_ibans:
            return ("iban_not_payer", "the refund IBAN did not pay for this service; a refund goes back "
                                      "only to the account that paid")
        if amount > self.available:
            return ("insufficient_balance", f"{amount} halalas exceed the available balance of "
                                            f"{self.available} halalas")
        return None

    def hold(self, *, refund_id: str, amount: int, occurred_at: datetime, origin: dict[str, Any]) -> None:
        """Set ``amount`` aside for a refund until the bank answers."""
        self.check_can_cover(amount)
        self._held(key=self.key, refund_id=refund_id, amount=amount, occurred_at=occurred_at, origin=origin,
                   balance_after=self.totals(held=self.held + amount))

    @event("Held")
    def _held(self, key: dict[str, str], refund_id: str, amount: int, occurred_at: datetime,
              origin: dict[str, Any], balance_after: dict[str, int]) -> None:
        self.held = balance_after["held"]

    def post_hold(self, *, refund_id: str, amount: int, occurred_at: datetime, origin: dict[str, Any]) -> None:
        """The bank paid: the held amount is now refunded."""
        self._refunded(key=self.key, refund_id=refund_id, amount=amount, occurred_at=occurred_at, origin=origin,
                       balance_after=self.totals(held=self.held - amount, refunded=self.refunded + amount))

    @event("Refunded")
    def _refunded(self, key: dict[str, str], refund_id: str, amount: int, occurred_at: datetime,
                  origin: dict[str, Any], balance_after: dict[str, int]) -> None:
        self.held = balance_after["held"]
        self.refunded = balance_after["refunded"]

    def release_hold(self, *, refund_id: str, amount: int, occurred_at: datetime, origin: dict[str, Any]) -> None:
        """The bank could not pay: the held amount is available again."""
        self._released(key=self.key, refund_id=refund_id, amount=amount, occurred_at=occurred_at, origin=origin,
                       balance_after=self.totals(held=self.held - amount))

    @event("Released")
    def _released(self, key: dict[str, str], refund_id: str, amount: int, occurred_at: datetime,
                  origin: dict[str, Any], balance_after: dict[str, int]) -> None:
        self.held = balance_after["held"]

    def charge(self, *, charge_id: str, amount: int, occurred_at: datetime, origin: dict[str, Any]) -> None:
        """Charge a service fee. The same charge id with the same amount is a repeat."""
        if charge_id in self.charges:
            if self.charges[charge_id] != amount:
                raise ChargeConflict(
                    f"charge {charge_id} was already applied for {self.charges[charge_id]} halalas")
            return
        self.check_can_cover(amount)
        self._charged(key=self.key, charge_id=charge_id, amount=amount, occurred_at=occurred_at,
                      origin=origin, balance_after=self.totals(charged=self.charged + amount))

    @event("Charged")
    def _charged(self, key: dict[str, str], charge_id: str, amount: int, occurred_at: datetime,
                 origin: dict[str, Any], balance_after: dict[str, int]) -> None:
        self.charged = balance_after["charged"]
        self.charges[charge_id] = amount


class RefundHold(Aggregate):
    """The payments side of one refund: held on a balance, or refused with the rule.

    Keyed by refund id, so a redelivered request, completion or failure
    changes nothing: each transition happens once, in order.
    """

    @staticmethod
    def create_id(refund_id: str) -> UUID:
        return uuid5(NAMESPACE, f"hold:{refund_id}")

    @event("Decided")
    def __init__(self, *, refund_id: str, balance_key: dict[str, str], amount: int, iban: str,
                 refused_rule: str | None, refused_reason: str | None, occurred_at: datetime,
                 origin: dict[str, Any]) -> None:
        self.refund_id = refund_id
        self.balance_key = balance_key
        self.amount = amount
        self.iban = iban
        self.state = "REFUSED" if refused_rule else "HELD"

    @property
    def open(self) -> bool:
        return self.state == "HELD"

    def close(self, *, completed: bool, occurred_at: datetime, origin: dict[str, Any]) -> None:
        """The bank answered; a closed hold ignores further answers."""
        if self.open:
            self._closed(refund_id=self.refund_id, completed=completed, occurred_at=occurred_at, origin=origin)

    @event("Closed")
    def _closed(self, refund_id: str, completed: bool, occurred_at: datetime, origin: dict[str, Any]) -> None:
        self.state = "POSTED" if completed else "RELEASED"
