"""Notifier domain: what the citizen and the agencies were told, once each.

A ``Notice`` is one approved message (catalogue key) about one case for one
recipient. Its id is deterministic (case + message key [+ reminder number]),
so a redelivered or replayed ledger event finds the notice it already made
and makes nothing new. Each notice goes out on one or more channels; each
channel's delivery is pending until it is sent, dead-lettered (with the
reason) or superseded (a later message of the same case, queued in the same
burst, says everything it said).

A ``Contact`` is where a person is told (their registered mobile and email);
notices for a person with no contact yet wait on it. An ``Escalation`` is an
open problem (an overdue refund, an unreflected payment, a status mismatch)
reported to the owning agency's liaison, reminded until it closes.

Times are passed in; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/notifier")

PENDING, SENT, DEAD, SUPERSEDED = "PENDING", "SENT", "DEAD_LETTERED", "SUPERSEDED"
CITIZEN_CHANNELS = ("sms", "email")


class NotifierError(Exception):
    """Raised when a notifier command does not fit the state it finds."""

    reason_code = "notifier_rule"


class NoSuchDelivery(NotifierError):
    """Raised when a notice has no delivery on the named channel."""


def message_id(case: str, key: str, reminder: int = 0) -> str:
    """The deterministic id of a message: the case and the state it reports (and which reminder)."""
    return f"{case}:{key}" + (f":reminder-{reminder}" if reminder else "")


class Notice(Aggregate):
    """One message about one case for one recipient, and its delivery on each channel."""

    @staticmethod
    def create_id(message_id: str) -> UUID:
        return uuid5(NAMESPACE, f"notice/{message_id}")

    @event("Queued")
    def __init__(self, message_id: str, key: str, audience: str, recipient: str, case: str,
                 cause_id: str, cause_type: str, facts: dict[str, Any], queued_at: datetime,
                 reminder: int = 0) -> None:
        self.message_id = message_id
        self.key = key
        self.audience = audience
        self.recipient = recipient
        self.case = case
        self.cause_id = cause_id
        self.cause_type = cause_type
        self.facts = facts
        self.queued_at = queued_at
        self.reminder = reminder
        self.language = "ar"
        self.awaiting_contact = False
        #: channel -> {"address", "state", "attempts", "last_error"}
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.superseded_by: str | None = None
        self.undelivered: str | None = None  #: why no channel could carry it

    @property
    def pending_channels(self) -> list[str]:
        return [c for c, d in self.deliveries.items() if d["state"] == PENDING]

    @property
    def settled(self) -> bool:
        """Every delivery has an outcome (or there is nothing left to wait for)."""
        return not self.awaiting_contact and not self.pending_channels

    def address(self, addresses: dict[str, str], language: str, at: datetime) -> None:
        """Send on these channels (channel -> address) in ``language``; the first addressing wins."""
        if self.deliveries:
            return
        self._addressed(addresses=dict(addresses), language=language, at=at)

    @event("Addressed")
    def _addressed(self, addresses: dict[str, str], language: str, at: datetime) -> None:
        self.language = language
        self.awaiting_contact = False
        self.deliveries = {channel: {"address": address, "state": PENDING, "attempts": 0, "last_error": None}
                           for channel, address in addresses.items()}

    @event("AwaitingContact")
    def await_contact(self, since: datetime) -> None:
        self.awaiting_contact = True

    def supersede(self, by: str, at: datetime) -> list[str]:
        """A later message of the same burst replaces this one (before it was addressed, or on the
        channels still pending); returns the channels it stopped."""
        channels = self.pending_channels
        unaddressed = not self.deliveries and self.superseded_by is None and self.undelivered is None
        if channels or self.awaiting_contact or unaddressed:
            self._superseded(**self._about(), by=by, channels=channels, at=at)
        return channels

    def _about(self) -> dict[str, Any]:
        """What every outcome event repeats, so it can be published on its own."""
        return {"message_id": self.message_id, "key": self.key, "audience": self.audience,
                "recipient": self.recipient, "case": self.case, "cause_id": self.cause_id,
                "reminder": self.reminder}

    @event("Superseded")
    def _superseded(self, message_id: str, key: str, audience: str, recipient: str, case: str, cause_id: str,
                    reminder: int, by: str, channels: list[str], at: datetime) -> None:
        self.awaiting_contact = False
        for channel in channels:
            self.deliveries[channel]["state"] = SUPERSEDED
        self.superseded_by = by

    def _delivery(self, channel: str) -> dict[str, Any]:
        try:
            return self.deliveries[channel]
        except KeyError:
            raise NoSuchDelivery(f"notice {self.message_id} has no {channel} delivery") from None

    def is_pending(self, channel: str) -> bool:
        return channel in self.deliveries and self.deliveries[channel]["state"] == PENDING

    def record_sent(self, channel: str, subject: str | None, body: str, provider_ref: str | None,
                    sent_at: datetime) -> None:
        """The channel accepted the message. Recorded even if the notice was superseded meanwhile:
        the ledger says what the citizen was actually told."""
        if self._delivery(channel)["state"] == SENT:
            return
        self._sent(**self._about(), channel=channel, address=self.deliveries[channel]["address"],
                   language=self.language, subject=subject, body=body, provider_ref=provider_ref,
                   attempts=self.deliveries[channel]["attempts"] + 1, sent_at=sent_at)

    @event("Sent")
    def _sent(self, message_id: str, key: str, audience: str, recipient: str, case: str, cause_id: str,
              reminder: int, channel: str, address: str, language: str, subject: str | None, body: str,
              provider_ref: str | None, attempts: int, sent_at: datetime) -> None:
        delivery = self.deliveries[channel]
        delivery["state"] = SENT
        delivery["attempts"] = attempts
        delivery["sent_at"] = sent_at

    def record_failure(self, channel: str, error: str, at: datetime, retry_at: datetime | None) -> None:
        """One attempt failed: try again at ``retry_at``, or dead-letter the delivery when None."""
        if not self.is_pending(channel):
            return
        if retry_at is None:
            self._dead_lettered(**self._about(), channel=channel, reason=error,
                                attempts=self.deliveries[channel]["attempts"] + 1, at=at)
        else:
            self._attempt_failed(channel=channel, error=error, retry_at=retry_at, at=at)

    @event("AttemptFailed")
    def _attempt_failed(self, channel: str, error: str, retry_at: datetime, at: datetime) -> None:
        delivery = self.deliveries[channel]
        delivery["attempts"] += 1
        delivery["last_error"] = error

    def dead_letter(self, channel: str, reason: str, at: datetime) -> None:
        if self.is_pending(channel):
            self._dead_lettered(**self._about(), channel=channel, reason=reason,
                                attempts=self.deliveries[channel]["attempts"], at=at)

    @event("DeadLettered")
    def _dead_lettered(self, message_id: str, key: str, audience: str, recipient: str, case: str,
                       cause_id: str, reminder: int, channel: str | None, reason: str, attempts: int,
                       at: datetime) -> None:
        if channel is None:  # nothing could be sent on any channel
            self.awaiting_contact = False
            self.undelivered = reason
            return
        delivery = self.deliveries[channel]
        delivery["state"] = DEAD
        delivery["attempts"] = attempts
        delivery["last_error"] = reason

    def undeliverable(self, reason: str, at: datetime) -> None:
        """Nothing can carry it (no contact in time, no channel configured for the recipient's
        addresses): dead-lettered on no channel at all, with the reason."""
        if not self.deliveries and self.undelivered is None and self.superseded_by is None:
            self._dead_lettered(**self._about(), channel=None, reason=reason, attempts=0, at=at)


class Contact(Aggregate):
    """Where a person is told (Absher's registered mobile and email) and what waits for it."""

    @staticmethod
    def create_id(person_id: str) -> UUID:
        return uuid5(NAMESPACE, f"contact/{person_id}")

    @event("Opened")
    def __init__(self, person_id: str) -> None:
        self.person_id = person_id
        self.mobile: str | None = None
        self.email: str | None = None
        self.language = "ar"
        self.updated_at: datetime | None = None
        self.waiting: list[str] = []

    @property
    def addresses(self) -> dict[str, str]:
        return {c: a for c, a in (("sms", self.mobile), ("email", self.email)) if a}

    def update(self, mobile: str | None, email: str | None, language: str, updated_at: datetime) -> bool:
        """The person's current contact; an older update than the one applied changes nothing."""
        if self.updated_at is not None and updated_at <= self.updated_at:
            return False
        self._updated(mobile=mobile, email=email, language=language, updated_at=updated_at)
        return True

    @event("Updated")
    def _updated(self, mobile: str | None, email: str | None, language: str, updated_at: datetime) -> None:
        self.mobile, self.email, self.language, self.updated_at = mobile, email, language, updated_at

    def wait(self, message_id: str) -> None:
        if message_id not in self.waiting:
            self._waiting(message_id=message_id)

    @event("MessageWaiting")
    def _waiting(self, message_id: str) -> None:
        self.waiting.append(message_id)

    def release(self) -> list[str]:
        """The messages that waited for a contact, now that there is one."""
        waiting = list(self.waiting)
        if waiting:
            self._released(message_ids=waiting)
        return waiting

    @event("Released")
    def _released(self, message_ids: list[str]) -> None:
        self.waiting = [m for m in self.waiting if m not in message_ids]


class Meeting(NamedTuple):
    """A new message meets the thread's latest one in a burst."""

    latest: str  #: the latest message's id
    supersedes: bool  #: the new message comes later in the journey: it replaces the latest one


class CaseThread(Aggregate):
    """The citizen messages of one case for one person, to spot a burst (one SMS, not three).

    A case's events reach the notifier on several topics, so a later step can arrive before an
    earlier one (``ledger.refund.ordered`` before the ``ledger.balance.held`` it followed). What
    is later is decided by the events' times, then by their stage in the journey, never by arrival.
    """

    @staticmethod
    def create_id(recipient: str, case: str) -> UUID:
        return uuid5(NAMESPACE, f"thread/{recipient}/{case}")

    @event("Started")
    def __init__(self, recipient: str, case: str) -> None:
        self.recipient = recipient
        self.case = case
        self.latest: str | None = None
        self.latest_at: datetime | None = None
        self.latest_stage: int | None = None

    def meet(self, at: datetime, stage: int, window: timedelta) -> Meeting | None:
        """How a message of time ``at`` and journey ``stage`` meets the latest message, if it is
        within ``window`` of it: the later of the two (by time, then stage) is the one to send."""
        if self.latest is None or self.latest_at is None or abs(at - self.latest_at) > window:
            return None
        if at != self.latest_at or self.latest_stage is None:
            return Meeting(self.latest, at >= self.latest_at)
        return Meeting(self.latest, stage >= self.latest_stage)

    @event("Noted")
    def note(self, message_id: str, at: datetime, stage: int | None = None) -> None:
        """``message_id`` is now the latest message (``stage`` None: recorded before stages were)."""
        self.latest, self.latest_at, self.latest_stage = message_id, at, stage


class Escalation(Aggregate):
    """An open problem reported to the liaison of the agency that owns it, reminded until it closes."""

    KINDS = ("refund_overdue", "payment_unreflected", "status_mismatch")

    @staticmethod
    def create_id(kind: str, case: str) -> UUID:
        return uuid5(NAMESPACE, f"escalation/{kind}/{case}")

    @event("Opened")
    def __init__(self, kind: str, case: str, key: str, owner: str, facts: dict[str, Any], cause_id: str,
                 cause_type: str, opened_at: datetime, remind_at: datetime) -> None:
        self.kind = kind
        self.case = case
        self.key = key
        self.owner = owner
        self.facts = facts
        self.cause_id = cause_id
        self.cause_type = cause_type
        self.opened_at = opened_at
        self.remind_at = remind_at
        self.reminders = 0
        self.closed_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None

    @event("Reminded")
    def remind(self, number: int, at: datetime, next_at: datetime | None) -> None:
        self.reminders = number
        self.remind_at = next_at

    def close(self, reason: str, at: datetime) -> bool:
        if not self.open:
            return False
        self._closed(reason=reason, at=at)
        return True

    @event("Closed")
    def _closed(self, reason: str, at: datetime) -> None:
        self.closed_at = at
        self.close_reason = reason
