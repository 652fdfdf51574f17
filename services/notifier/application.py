"""The notifier application: ledger events in, approved messages queued, escalations kept.

It follows every ``ledger.*`` topic (and Absher's ``contacts``) with the kit's
tracked ingress. For each ledger event the catalogue names the messages it
causes (one per audience); each becomes a :class:`Notice` with a deterministic
id, addressed to the citizen's registered contact or to the owning agency's
liaison, with a durable ``deliver`` timer per channel. The dispatcher
(``dispatcher.py``) sends what is due and records the outcome here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Identifier

from services.kit import liaisons, metrics
from services.kit.catalogue import Catalogue
from services.kit.catalogue.catalogue import MissingFact
from services.kit.envelope import Envelope
from services.kit.ingress import Handler, Reading, TimerHandler, UnitOfWork
from services.kit.settings import Settings
from services.kit.store import LedgerApplication
from services.notifier.channels import Outgoing
from services.notifier.config import NotifierSettings
from services.notifier.domain import (
    CaseThread,
    Contact,
    Escalation,
    Notice,
    NotifierError,
    message_id,
)

DELIVER, CONTACT_WAIT, REMIND = "deliver", "notifier.contact_wait", "notifier.remind"
#: Ledger events that open an escalation (kind), and the events that close one.
OPENS = {"ledger.refund.overdue": "refund_overdue", "ledger.payment.unreflected": "payment_unreflected",
         "ledger.refund.status_mismatch": "status_mismatch"}
CLOSES = {"ledger.refund.completed": ("refund_overdue", "status_mismatch"),
          "ledger.refund.failed": ("refund_overdue", "status_mismatch"),
          "ledger.refund.rejected": ("refund_overdue", "status_mismatch"),
          "ledger.payment.unreflected_resolved": ("payment_unreflected",),
          "ledger.payment.acknowledged": ("payment_unreflected",)}


def case_of(data: Mapping[str, Any]) -> str:
    """The case a ledger event is about: its refund, else its payment, else its visa."""
    if data.get("refund_id"):
        return f"refund/{data['refund_id']}"
    if data.get("payment_id"):
        return f"payment/{data['payment_id']}"
    if data.get("export_number"):
        return f"visa/{data['sponsor_id']}/{data['export_number']}/{data['serial_number']}"
    raise NotifierError("the event names no refund, payment or visa")


def deliver_key(channel: str, message: str) -> str:
    return f"{channel}|{message}"


@dataclass(frozen=True)
class Job:
    """A due delivery: rendered and ready to send, or settled without sending (``outcome``)."""

    timer_key: str
    message_id: str
    channel: str
    attempt: int
    outgoing: Outgoing | None = None
    outcome: str | None = None          # "stale" (nothing to do) or a dead-letter reason


@dataclass(frozen=True)
class Result:
    job: Job
    provider_ref: str | None = None
    error: str | None = None
    permanent: bool = False


class NotifierApplication(LedgerApplication):
    name = "notifier"

    def __init__(self, settings: Settings, schema: str | None = None,
                 notifier: NotifierSettings | None = None) -> None:
        super().__init__(settings, schema)
        self.config = notifier or NotifierSettings.from_env()
        self.catalogue = Catalogue.load()
        self.registry = liaisons.registry(settings.liaisons_file)
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._timers = SQL("{0}.timers").format(Identifier(self.ingress_recorder.datastore.schema))

    # ------------------------------------------------------------------ queries

    def notice(self, message: str) -> Notice | None:
        return self.find(Notice.create_id(message))

    def pending_by_channel(self) -> dict[str, int]:
        """Deliveries waiting to go out, per channel (the durable ``deliver`` timers)."""
        with self.ingress_recorder.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT split_part(key, '|', 1) AS channel, count(*) AS n FROM {0} "
                             "WHERE name = %s GROUP BY 1").format(self._timers), (DELIVER,))
            return {row["channel"]: row["n"] for row in curs.fetchall()}

    # ------------------------------------------------------------------ dispatch

    def due_jobs(self, limit: int = 100) -> list[Job]:
        """The deliveries due now, rendered (blocking: run in the executor)."""
        now = self.clock()
        return [self._job(timer.key) for timer in self.ingress_recorder.due_timers(now, limit, names=[DELIVER])]

    def _job(self, timer_key: str) -> Job:
        channel, _, message = timer_key.partition("|")
        notice = self.notice(message)
        if notice is None or not notice.is_pending(channel):
            return Job(timer_key, message, channel, 0, outcome="stale")
        delivery = notice.deliveries[channel]
        attempt = delivery["attempts"] + 1
        if channel not in self.config.channels:
            return Job(timer_key, message, channel, attempt, outcome=f"channel_not_configured: {channel}")
        try:
            if channel == "sms":
                rendered = self.catalogue.render(notice.key, notice.language, "sms", notice.facts, notice.reminder)
            else:
                rendered = self.catalogue.render_bilingual(notice.key, "email", notice.facts, notice.reminder)
        except MissingFact as error:
            return Job(timer_key, message, channel, attempt, outcome=f"missing_fact: {error}")
        payload = {"key": notice.key, "case": notice.case, "audience": notice.audience,
                   "recipient": notice.recipient, "reminder": notice.reminder, "facts": notice.facts}
        outgoing = Outgoing(message_id=message, channel=channel, address=delivery["address"],
                            subject=rendered.subject, body=rendered.body, language=notice.language,
                            audience=notice.audience, payload=payload if channel == "webhook" else {})
        return Job(timer_key, message, channel, attempt, outgoing=outgoing)

    def record(self, results: Sequence[Result]) -> int:
        """Record what the channels answered, in one transaction (blocking)."""
        now = self.clock()
        uow = UnitOfWork(self)
        for result in results:
            job = result.job
            notice: Notice | None = uow.get(Notice.create_id(job.message_id))
            if notice is None or not notice.is_pending(job.channel):
                uow.cancel(DELIVER, job.timer_key)
                continue
            if job.outgoing is not None and result.error is None:
                notice.record_sent(job.channel, job.outgoing.subject, job.outgoing.body, result.provider_ref, now)
                uow.cancel(DELIVER, job.timer_key)
                metrics.NOTIFICATIONS_SENT.labels(job.channel).inc()
                continue
            reason = job.outcome or result.error or "unknown"
            if job.outgoing is not None:
                metrics.NOTIFICATIONS_FAILED.labels(job.channel).inc()
            if job.outgoing is None or result.permanent or job.attempt >= self.config.max_attempts:
                notice.record_failure(job.channel, reason, now, None)
                uow.cancel(DELIVER, job.timer_key)
                why = (job.outcome.split(":")[0] if job.outcome else "refused" if result.permanent
                       else "retries_exhausted")
                metrics.NOTIFICATIONS_DEAD.labels(job.channel, why).inc()
            else:
                retry_at = now + self.config.backoff(job.attempt)
                notice.record_failure(job.channel, reason, now, retry_at)
                uow.schedule(DELIVER, job.timer_key, retry_at)
        recordings = self.save(*uow.aggregates, timers=uow.timer_changes)
        return len(recordings)


class Notifier:
    """The command handlers: choose, address and queue messages; keep escalations."""

    def __init__(self, app: NotifierApplication) -> None:
        self.app = app
        self.config = app.config
        self.catalogue = app.catalogue

    # ------------------------------------------------------------------ ledger events

    def on_ledger_event(self, uow: UnitOfWork, envelope: Envelope) -> None:
        data = envelope.data
        for audience, key in self.catalogue.messages_for(envelope.type, data).items():
            message = self.catalogue.messages[key]
            recipient = data.get(message.recipient)
            if not recipient:
                raise NotifierError(f"{envelope.type} names no {message.recipient} for message {key}")
            self.queue(uow, key=key, audience=audience, recipient=str(recipient), case=case_of(data),
                       cause_id=envelope.id, cause_type=envelope.type, facts=dict(data), at=envelope.time)
        if envelope.type in OPENS:
            self._open_escalation(uow, envelope, OPENS[envelope.type])
        for kind in CLOSES.get(envelope.type, ()):
            self._close_escalation(uow, kind, case_of(data), envelope.type, envelope.time)

    def ledger_event_reads(self, envelope: Envelope) -> list[UUID]:
        """The aggregates :meth:`on_ledger_event` reads first: each message's notice, the citizen's
        case thread and contact, the escalations it opens or closes (loaded for a batch at once)."""
        data = envelope.data
        try:
            case = case_of(data)
        except NotifierError:
            return []  # the handler rejects it
        ids = []
        for audience, key in self.catalogue.messages_for(envelope.type, data).items():
            ids.append(Notice.create_id(message_id(case, key)))
            recipient = data.get(self.catalogue.messages[key].recipient)
            if audience != "agency" and recipient:
                ids += [CaseThread.create_id(str(recipient), case), Contact.create_id(str(recipient))]
        kinds = ([OPENS[envelope.type]] if envelope.type in OPENS else []) + list(CLOSES.get(envelope.type, ()))
        return ids + [Escalation.create_id(kind, case) for kind in kinds]

    def on_contact(self, uow: UnitOfWork, envelope: Envelope) -> None:
        data = envelope.data
        person = data["person_id"]
        contact: Contact | None = uow.get(Contact.create_id(person))
        if contact is None:
            contact = Contact(person)
            uow.add(contact)
        if not contact.update(data.get("mobile"), data.get("email"), data.get("language", "ar"),
                              envelope.at("updated_at")):
            return
        if not contact.addresses:
            return
        for waiting in contact.release():
            notice: Notice | None = uow.get(Notice.create_id(waiting))
            if notice is not None and notice.awaiting_contact:
                uow.cancel(CONTACT_WAIT, waiting)
                self._address_or_drop(uow, notice, contact.addresses, contact.language,
                                      self.app.clock() + self.config.coalesce)

    # ------------------------------------------------------------------ queuing

    def queue(self, uow: UnitOfWork, *, key: str, audience: str, recipient: str, case: str, cause_id: str,
              cause_type: str, facts: dict[str, Any], at: datetime, reminder: int = 0) -> Notice | None:
        """Queue one message (nothing if it was queued before: its id is deterministic)."""
        mid = message_id(case, key, reminder)
        if uow.get(Notice.create_id(mid)) is not None:
            return None
        notice = Notice(mid, key, audience, recipient, case, cause_id, cause_type, facts, at, reminder)
        uow.add(notice)
        now = self.app.clock()
        if audience == "agency":
            liaison = self.app.registry.for_agency(recipient, facts.get("iban"))
            known = {"email": liaison.email, "sms": liaison.phone, "webhook": liaison.webhook or ""}
            self._address_or_drop(uow, notice, known, liaison.language, now)
            return notice
        if self._supersede_burst(uow, notice, at, self.catalogue.stage(cause_type), now):
            return notice
        contact: Contact | None = uow.get(Contact.create_id(recipient))
        if contact is not None and contact.addresses:
            self._address_or_drop(uow, notice, contact.addresses, contact.language, now + self.config.coalesce)
            return notice
        if contact is None:
            contact = Contact(recipient)
            uow.add(contact)
        contact.wait(mid)
        notice.await_contact(now)
        uow.schedule(CONTACT_WAIT, mid, now + self.config.contact_wait)
        return notice

    def _channels(self, addresses: Mapping[str, str]) -> dict[str, str]:
        return {c: a for c, a in addresses.items() if a and c in self.config.channels}

    def _address_or_drop(self, uow: UnitOfWork, notice: Notice, known: Mapping[str, str], language: str,
                         due: datetime) -> None:
        """Address the notice on the configured channels of ``known``; none configured: dead letter."""
        usable = self._channels(known)
        if usable:
            self._address(uow, notice, usable, language, due)
        else:
            wanted = ", ".join(sorted(c for c, a in known.items() if a)) or "none"
            notice.undeliverable(f"channel_not_configured: {wanted}", self.app.clock())
            metrics.NOTIFICATIONS_DEAD.labels("none", "channel_not_configured").inc()

    def _address(self, uow: UnitOfWork, notice: Notice, addresses: dict[str, str], language: str,
                 due: datetime) -> None:
        notice.address(addresses, language, self.app.clock())
        for channel in addresses:
            uow.schedule(DELIVER, deliver_key(channel, notice.message_id), due)

    def _supersede_burst(self, uow: UnitOfWork, notice: Notice, at: datetime, stage: int, now: datetime) -> bool:
        """Messages of one case within the coalescing window are a burst: only the last goes out.
        True when ``notice`` itself is not the last (a later step of the case arrived first)."""
        thread_id = CaseThread.create_id(notice.recipient, notice.case)
        thread: CaseThread | None = uow.get(thread_id)
        if thread is None:
            thread = CaseThread(notice.recipient, notice.case)
            uow.add(thread)
        meeting = thread.meet(at, stage, self.config.coalesce)
        if meeting is not None and not meeting.supersedes:
            notice.supersede(meeting.latest, now)
            return True
        if meeting is not None:
            earlier: Notice | None = uow.get(Notice.create_id(meeting.latest))
            if earlier is not None:
                for channel in earlier.supersede(notice.message_id, now):
                    uow.cancel(DELIVER, deliver_key(channel, meeting.latest))
                uow.cancel(CONTACT_WAIT, meeting.latest)
        thread.note(notice.message_id, at, stage)
        return False

    # ------------------------------------------------------------------ escalations

    def _open_escalation(self, uow: UnitOfWork, envelope: Envelope, kind: str) -> None:
        data = envelope.data
        case = case_of(data)
        key = self.catalogue.message_for(envelope.type, data, "agency")
        if key is None or uow.get(Escalation.create_id(kind, case)) is not None:
            return
        owner = str(data.get(self.catalogue.messages[key].recipient))
        remind_at = self.app.clock() + self.config.reminder_after
        uow.add(Escalation(kind, case, key, owner, dict(data), envelope.id, envelope.type, envelope.time, remind_at))
        if self.config.max_reminders > 0:
            uow.schedule(REMIND, f"{kind}|{case}", remind_at)

    def _close_escalation(self, uow: UnitOfWork, kind: str, case: str, why: str, at: datetime) -> None:
        escalation: Escalation | None = uow.get(Escalation.create_id(kind, case))
        if escalation is not None and escalation.close(why, at):
            uow.cancel(REMIND, f"{kind}|{case}")

    # ------------------------------------------------------------------ timers

    def remind(self, uow: UnitOfWork, key: str, due_at: datetime, now: datetime) -> None:
        kind, _, case = key.partition("|")
        escalation: Escalation | None = uow.get(Escalation.create_id(kind, case))
        if escalation is None or not escalation.open:
            return
        number = escalation.reminders + 1
        last = number >= self.config.max_reminders
        next_at = None if last else now + self.config.reminder_after
        self.queue(uow, key=escalation.key, audience="agency", recipient=escalation.owner, case=case,
                   cause_id=escalation.cause_id, cause_type=escalation.cause_type, facts=escalation.facts,
                   at=now, reminder=number)
        escalation.remind(number, now, next_at)
        if next_at is not None:
            uow.schedule(REMIND, key, next_at)

    def contact_wait_over(self, uow: UnitOfWork, key: str, due_at: datetime, now: datetime) -> None:
        notice: Notice | None = uow.get(Notice.create_id(key))
        if notice is not None and notice.awaiting_contact:
            notice.undeliverable("no_contact", now)
            metrics.NOTIFICATIONS_DEAD.labels("none", "no_contact").inc()


#: The partner event types the notifier consumes (Absher's contacts).
PARTNER_TYPES = ("contact.updated",)


def followed_types(catalogue: Catalogue) -> frozenset[str]:
    """The ledger event types the notifier acts on: every one the catalogue answers, and the closers."""
    return catalogue.answered_events() | frozenset(OPENS) | frozenset(CLOSES)


def handled_types(catalogue: Catalogue) -> frozenset[str]:
    return followed_types(catalogue) | frozenset(PARTNER_TYPES)


def handlers(app: LedgerApplication) -> dict[str, Handler]:
    assert isinstance(app, NotifierApplication)
    notifier = Notifier(app)
    found: dict[str, Handler] = dict.fromkeys(followed_types(app.catalogue),
                                              Reading(notifier.on_ledger_event, notifier.ledger_event_reads))
    found["contact.updated"] = Reading(notifier.on_contact,
                                       lambda e: (Contact.create_id(e.data["person_id"]),))
    assert set(found) == handled_types(app.catalogue)
    return found


def timer_handlers(app: LedgerApplication) -> dict[str, TimerHandler]:
    assert isinstance(app, NotifierApplication)
    notifier = Notifier(app)
    return {REMIND: notifier.remind, CONTACT_WAIT: notifier.contact_wait_over}

