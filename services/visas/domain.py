"""Visas domain (journey B): a visa keyed by (sponsor ID, export number, serial
number), its cancellation, the refund route the rules give it, and the start
of its refund once Musaned accepts the cancellation.

``visas`` and ``cancellations`` are different topics, so the facts of one visa
arrive in any order. The aggregate is opened by whichever fact comes first and
waits: the route is decided once issuance and request are both known, and the
refund starts (or the case closes as non-refundable) once the route and
Musaned's acceptance are both known. A fact repeated with the same content
changes nothing; the same fact with other content is a conflict.

Times are passed in; nothing here reads a clock or does I/O (the time zone is
looked up in the standard library's cached tz data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/visas")

AUTOMATIC, MOFA, MANUAL_REVIEW, NON_REFUNDABLE = "AUTOMATIC", "MOFA", "MANUAL_REVIEW", "NON_REFUNDABLE"
ISSUED, REQUESTED, ACCEPTED = "visa.issued", "visa.cancellation_requested", "visa.cancellation_accepted"


class VisasError(Exception):
    """Raised when a visas business rule is broken."""

    reason_code = "business_rule"


class VisaConflict(VisasError):
    """Raised when a fact about a visa is reported again with different content."""

    reason_code = "visa_conflict"


class IssueConflict(VisaConflict):
    """Raised when a visa is issued again with a different type, payment, fee or time."""

    reason_code = "visa_issue_conflict"


class CancellationRequestConflict(VisaConflict):
    """Raised when a visa's cancellation is requested again at another time or through another channel."""

    reason_code = "cancellation_request_conflict"


class CancellationAcceptanceConflict(VisaConflict):
    """Raised when a visa's cancellation is accepted again at another time."""

    reason_code = "cancellation_acceptance_conflict"


class RoutingRules(Protocol):
    """What routing reads from the rules file (``services.kit.rules.Rules`` fits)."""

    @property
    def version(self) -> str: ...
    @property
    def automatic_cancellation_window(self) -> timedelta: ...
    @property
    def covid_from(self) -> date: ...
    @property
    def covid_to(self) -> date: ...
    @property
    def refundable_visa_types(self) -> frozenset[str]: ...
    @property
    def non_refundable_visa_types(self) -> frozenset[str]: ...
    @property
    def timezone(self) -> str: ...


@dataclass(frozen=True)
class Routing:
    """Where a cancellation goes, which rule sent it there and why."""

    route: str
    rule: str
    reason: str
    rules_version: str
    seconds_since_issue: int
    hours_since_issue: float   # truncated to 2 decimals: 71:59:59 is 71.99, never rounded up to 72


def _clock(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def route_cancellation(*, visa_type: str, issued_at: datetime, requested_at: datetime,
                       rules: RoutingRules) -> Routing:
    """The route of a cancellation requested at ``requested_at`` for a visa issued at ``issued_at``.

    In order: a non-refundable type closes; a type in neither list, a request
    before the issue, or an issue inside the COVID-19 window (dates in the
    rules' time zone, both ends included) goes to manual review; otherwise less
    than the automatic window is AUTOMATIC and the window or more is MOFA.
    """
    elapsed = requested_at - issued_at
    window = rules.automatic_cancellation_window
    issued_on = issued_at.astimezone(ZoneInfo(rules.timezone)).date()

    def routing(route: str, rule: str, reason: str) -> Routing:
        return Routing(route, rule, reason, rules.version, math.floor(elapsed.total_seconds()),
                       math.floor(elapsed / timedelta(seconds=36)) / 100)

    if visa_type in rules.non_refundable_visa_types:
        return routing(NON_REFUNDABLE, "non_refundable_type", f"{visa_type} visas are non-refundable")
    if visa_type not in rules.refundable_visa_types:
        return routing(MANUAL_REVIEW, "unknown_visa_type",
                       f"visa type {visa_type} is neither refundable nor non-refundable in rules "
                       f"{rules.version}: a person decides")
    if elapsed < timedelta(0):
        return routing(MANUAL_REVIEW, "requested_before_issue",
                       f"the cancellation was requested {_clock(-elapsed)} before the visa was issued: "
                       "a person checks the dates")
    if rules.covid_from <= issued_on <= rules.covid_to:
        return routing(MANUAL_REVIEW, "covid_window",
                       f"issued on {issued_on} ({rules.timezone}), inside the COVID-19 window "
                       f"{rules.covid_from} to {rules.covid_to}: a special case for manual review")
    if elapsed < window:
        return routing(AUTOMATIC, "within_window",
                       f"cancellation requested {_clock(elapsed)} after issue, less than {_clock(window)}: "
                       "refunded automatically to the paying account")
    return routing(MOFA, "after_window",
                   f"cancellation requested {_clock(elapsed)} after issue, {_clock(window)} or more: "
                   "MoFA refunds it")


def visa_key(sponsor_id: str, export_number: str, serial_number: str) -> dict[str, str]:
    return {"sponsor_id": sponsor_id, "export_number": export_number, "serial_number": serial_number}


class Visa(Aggregate):
    """One visa: issue, cancellation request and acceptance, route, refund start, NIC statuses."""

    @staticmethod
    def create_id(sponsor_id: str, export_number: str, serial_number: str) -> UUID:
        return uuid5(NAMESPACE, f"visa:{sponsor_id}:{export_number}:{serial_number}")

    @event("Opened")
    def __init__(self, *, sponsor_id: str, export_number: str, serial_number: str) -> None:
        self.key = visa_key(sponsor_id, export_number, serial_number)
        self.visa_type: str | None = None
        self.payment_id: str | None = None
        self.fee: int | None = None
        self.issued_at: datetime | None = None
        self.requested_at: datetime | None = None
        self.channel: str | None = None
        self.accepted_at: datetime | None = None
        self.routing: Routing | None = None
        self.outcome: str | None = None        # REFUND_STARTED or CLOSED_NON_REFUNDABLE
        self.status: str | None = None         # NIC's latest status
        self.status_changed_at: datetime | None = None
        self.statuses: set[tuple[str, datetime]] = set()

    @property
    def name(self) -> str:
        return f"visa {self.key['export_number']}/{self.key['serial_number']} of sponsor {self.key['sponsor_id']}"

    @property
    def waiting_for(self) -> list[str]:
        """The inbound facts a started cancellation still waits for (empty otherwise)."""
        if self.outcome or (self.requested_at is None and self.accepted_at is None):
            return []
        facts = {ISSUED: self.issued_at, REQUESTED: self.requested_at, ACCEPTED: self.accepted_at}
        return [name for name, known in facts.items() if known is None]

    # -- commands ---------------------------------------------------------------------------------------

    def issue(self, *, visa_type: str, payment_id: str, fee: int, issued_at: datetime, origin: dict[str, Any],
              rules: RoutingRules) -> None:
        """Musaned issued the visa. A repeat changes nothing; other facts are an IssueConflict."""
        if self.issued_at is not None:
            facts = {"visa_type": visa_type, "payment_id": payment_id, "fee": fee, "issued_at": issued_at}
            different = sorted(name for name, value in facts.items() if getattr(self, name) != value)
            if different:
                raise IssueConflict(f"{self.name} was already issued with a different {', '.join(different)}")
            return
        self._issued(key=self.key, visa_type=visa_type, payment_id=payment_id, fee=fee, issued_at=issued_at,
                     origin=origin)
        self._advance(rules, origin)

    def request_cancellation(self, *, requested_at: datetime, channel: str, origin: dict[str, Any],
                             rules: RoutingRules) -> None:
        """The sponsor asked to cancel; kept until the visa's issue is known, then routed."""
        if self.requested_at is not None:
            if (self.requested_at, self.channel) != (requested_at, channel):
                raise CancellationRequestConflict(
                    f"the cancellation of {self.name} was already requested at {self.requested_at.isoformat()} "
                    f"through {self.channel}")
            return
        self._cancellation_requested(key=self.key, requested_at=requested_at, channel=channel,
                                     issued_at=self.issued_at, origin=origin)
        self._advance(rules, origin)

    def accept_cancellation(self, *, accepted_at: datetime, origin: dict[str, Any]) -> None:
        """Musaned accepted the cancellation: the refund starts now, or once the route is known."""
        if self.accepted_at is not None:
            if self.accepted_at != accepted_at:
                raise CancellationAcceptanceConflict(
                    f"the cancellation of {self.name} was already accepted at {self.accepted_at.isoformat()}")
            return
        self._cancellation_accepted(key=self.key, accepted_at=accepted_at, issued_at=self.issued_at,
                                    requested_at=self.requested_at, channel=self.channel, origin=origin)
        self._advance(None, origin)

    def change_status(self, *, status: str, changed_at: datetime, origin: dict[str, Any]) -> None:
        """NIC reported a status. Each (status, time) is recorded once; the latest time is current."""
        if (status, changed_at) not in self.statuses:
            self._status_changed(key=self.key, status=status, changed_at=changed_at, payment_id=self.payment_id,
                                 origin=origin)

    def _advance(self, rules: RoutingRules | None, origin: dict[str, Any]) -> None:
        """Route once issue and request are known; start or close once the route and acceptance are."""
        if self.routing is None and rules is not None and self.issued_at and self.requested_at:
            assert self.visa_type is not None
            routing = route_cancellation(visa_type=self.visa_type, issued_at=self.issued_at,
                                         requested_at=self.requested_at, rules=rules)
            self._routed(**self._case(), route=routing.route, rule=routing.rule, reason=routing.reason,
                         rules_version=routing.rules_version, seconds_since_issue=routing.seconds_since_issue,
                         hours_since_issue=routing.hours_since_issue, origin=origin)
        if self.routing is None or self.accepted_at is None or self.outcome is not None:
            return
        decided: dict[str, Any] = {"route": self.routing.route, "reason": self.routing.reason,
                                   "rules_version": self.routing.rules_version}
        if self.routing.route == NON_REFUNDABLE:
            self._closed_non_refundable(**self._case(), **decided, accepted_at=self.accepted_at, origin=origin)
        else:
            self._refund_started(**self._case(), **decided, hours_since_issue=self.routing.hours_since_issue,
                                 accepted_at=self.accepted_at, origin=origin)

    def _case(self) -> dict[str, Any]:
        """The facts every decision event repeats, so each stands alone."""
        return {"key": self.key, "visa_type": self.visa_type, "payment_id": self.payment_id, "fee": self.fee,
                "issued_at": self.issued_at, "requested_at": self.requested_at, "channel": self.channel}

    # -- events -----------------------------------------------------------------------------------------

    @event("Issued")
    def _issued(self, key: dict[str, str], visa_type: str, payment_id: str, fee: int, issued_at: datetime,
                origin: dict[str, Any]) -> None:
        self.visa_type, self.payment_id, self.fee, self.issued_at = visa_type, payment_id, fee, issued_at

    @event("CancellationRequested")
    def _cancellation_requested(self, key: dict[str, str], requested_at: datetime, channel: str,
                                issued_at: datetime | None, origin: dict[str, Any]) -> None:
        self.requested_at, self.channel = requested_at, channel

    @event("CancellationAccepted")
    def _cancellation_accepted(self, key: dict[str, str], accepted_at: datetime, issued_at: datetime | None,
                               requested_at: datetime | None, channel: str | None, origin: dict[str, Any]) -> None:
        self.accepted_at = accepted_at

    @event("CancellationRouted")
    def _routed(self, key: dict[str, str], visa_type: str, payment_id: str, fee: int, issued_at: datetime,
                requested_at: datetime, channel: str, route: str, rule: str, reason: str, rules_version: str,
                seconds_since_issue: int, hours_since_issue: float, origin: dict[str, Any]) -> None:
        self.routing = Routing(route, rule, reason, rules_version, seconds_since_issue, hours_since_issue)

    @event("RefundStarted")
    def _refund_started(self, key: dict[str, str], visa_type: str, payment_id: str, fee: int, issued_at: datetime,
                        requested_at: datetime, channel: str, route: str, reason: str, rules_version: str,
                        hours_since_issue: float, accepted_at: datetime, origin: dict[str, Any]) -> None:
        self.outcome = "REFUND_STARTED"

    @event("ClosedNonRefundable")
    def _closed_non_refundable(self, key: dict[str, str], visa_type: str, payment_id: str, fee: int,
                               issued_at: datetime, requested_at: datetime, channel: str, route: str, reason: str,
                               rules_version: str, accepted_at: datetime, origin: dict[str, Any]) -> None:
        self.outcome = "CLOSED_NON_REFUNDABLE"

    @event("StatusChanged")
    def _status_changed(self, key: dict[str, str], status: str, changed_at: datetime, payment_id: str | None,
                        origin: dict[str, Any]) -> None:
        self.statuses.add((status, changed_at))
        if self.status_changed_at is None or changed_at >= self.status_changed_at:
            self.status, self.status_changed_at = status, changed_at
