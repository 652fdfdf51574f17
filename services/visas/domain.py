"""Visas domain: a visa, keyed by (sponsor ID, export number, serial number),
and what happened to it. Times are passed in; no I/O, no clock.

This is the recording core; refund routing (automatic / MoFA / visit /
COVID review) builds on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/visas")


class VisasError(Exception):
    """Raised when a visas business rule is broken."""

    reason_code = "business_rule"


class UnknownVisa(VisasError):
    """Raised when an event names a visa the ledger has not seen issued."""

    reason_code = "unknown_visa"


class VisaConflict(VisasError):
    """Raised when a visa is issued again with different facts."""

    reason_code = "visa_conflict"


def visa_key(sponsor_id: str, export_number: str, serial_number: str) -> dict[str, str]:
    return {"sponsor_id": sponsor_id, "export_number": export_number, "serial_number": serial_number}


class Visa(Aggregate):
    """One visa and its cancellation."""

    @staticmethod
    def create_id(sponsor_id: str, export_number: str, serial_number: str) -> UUID:
        return uuid5(NAMESPACE, f"visa:{sponsor_id}:{export_number}:{serial_number}")

    @event("Issued")
    def __init__(self, *, sponsor_id: str, export_number: str, serial_number: str, visa_type: str,
                 payment_id: str, fee: int, issued_at: datetime, origin: dict[str, Any]) -> None:
        self.sponsor_id = sponsor_id
        self.export_number = export_number
        self.serial_number = serial_number
        self.visa_type = visa_type
        self.payment_id = payment_id
        self.fee = fee
        self.issued_at = issued_at
        self.status = "ISSUED"
        self.cancellation_requested_at: datetime | None = None
        self.cancellation_channel: str | None = None
        self.cancelled_at: datetime | None = None

    @property
    def key(self) -> dict[str, str]:
        return visa_key(self.sponsor_id, self.export_number, self.serial_number)

    def check_same_issue(self, *, visa_type: str, payment_id: str, fee: int, issued_at: datetime) -> None:
        if (self.visa_type, self.payment_id, self.fee, self.issued_at) != (visa_type, payment_id, fee, issued_at):
            raise VisaConflict(f"visa {self.export_number}/{self.serial_number} was issued with other facts")

    def change_status(self, status: str, changed_at: datetime, origin: dict[str, Any]) -> None:
        if status != self.status:
            self._status_changed(key=self.key, status=status, changed_at=changed_at, origin=origin)

    @event("StatusChanged")
    def _status_changed(self, key: dict[str, str], status: str, changed_at: datetime,
                        origin: dict[str, Any]) -> None:
        self.status = status

    def request_cancellation(self, requested_at: datetime, channel: str, origin: dict[str, Any]) -> None:
        if self.cancellation_requested_at is None:
            self._cancellation_requested(key=self.key, requested_at=requested_at, channel=channel,
                                         origin=origin)

    @event("CancellationRequested")
    def _cancellation_requested(self, key: dict[str, str], requested_at: datetime, channel: str,
                                origin: dict[str, Any]) -> None:
        self.cancellation_requested_at = requested_at
        self.cancellation_channel = channel

    def accept_cancellation(self, accepted_at: datetime, origin: dict[str, Any]) -> None:
        if self.cancelled_at is None:
            self._cancellation_accepted(key=self.key, accepted_at=accepted_at, origin=origin)

    @event("CancellationAccepted")
    def _cancellation_accepted(self, key: dict[str, str], accepted_at: datetime, origin: dict[str, Any]) -> None:
        self.cancelled_at = accepted_at
