"""The notifier's application on a real PostgreSQL, fed ledger events through its tracked ingress:
escalations open, remind and close; bursts collapse; deliveries retry, give up and dead-letter;
a message waits for a contact no longer than allowed. No network: the channels' answers are fed
to ``record`` as the dispatcher would."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services.kit.envelope import RawMessage, SchemaRegistry, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.outbox import OutboxRelay
from services.notifier import application, service
from services.notifier.application import CONTACT_WAIT, DELIVER, REMIND, NotifierApplication, Result
from services.notifier.config import NotifierSettings
from services.notifier.domain import DEAD, PENDING, SENT, SUPERSEDED, Escalation, NotifierError, message_id
from tests.factories import cloudevent

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
WHO = "1012345672"
CONFIG = NotifierSettings(smtp_host="127.0.0.1", sms_gateway_url="http://127.0.0.1:9/sms",
                          coalesce=timedelta(seconds=30), retry_base=timedelta(seconds=5),
                          retry_max=timedelta(seconds=60), max_attempts=3, reminder_after=timedelta(hours=1),
                          max_reminders=2, contact_wait=timedelta(days=1))


def example(event_type: str, **changes) -> dict:
    data = json.loads((SCHEMAS / f"{event_type}.json").read_text())["examples"][0]
    return {**data, **changes}


class Notifier:
    def __init__(self, settings) -> None:
        self.now = T0
        self.app = NotifierApplication(settings, notifier=CONFIG)
        self.app.clock = lambda: self.now
        registry = SchemaRegistry(resolve_schemas_dir(settings))
        self.ingress = Ingress(self.app, "notifier", registry, application.handlers(self.app), (NotifierError,),
                               timer_handlers=application.timer_handlers(self.app), clock=lambda: self.now)
        self.relay = OutboxRelay(self.app, "notifier", service.translate, None, None)
        self.offset = -1

    def feed(self, topic: str, event_type: str, data: dict, at: datetime) -> None:
        self.offset += 1
        value = cloudevent(event_type, data, source=f"refund-ledger/{topic}", time=at)
        outcome = self.ingress.apply([RawMessage(topic, 0, self.offset, WHO.encode(), value)])
        assert not outcome.rejected, outcome.rejected

    def contact(self, at: datetime, **fields) -> None:
        self.feed("contacts", "contact.updated", {"person_id": WHO, "updated_at": at.isoformat(), **fields}, at)

    def notice(self, case: str, key: str, reminder: int = 0):
        return self.app.notice(message_id(case, key, reminder))

    def timers(self, name: str) -> dict[str, datetime]:
        return {t.key: t.due_at for t in self.app.ingress_recorder.timers() if t.name == name}

    def published(self) -> list[dict]:
        records, _, _ = self.relay._next(0)
        return [json.loads(r.value) for r in records]


@pytest.fixture
def notifier(db_settings):
    made = Notifier(db_settings)
    try:
        yield made
    finally:
        made.app.close()


def overdue(refund_id: str = "RR-9", owner: str = "BANK") -> dict:
    return example("ledger.refund.overdue", refund_id=refund_id, beneficiary_id=WHO, owner=owner)


def test_an_overdue_refund_escalates_is_reminded_while_open_and_closes_with_the_bank_answer(notifier):
    notifier.feed("ledger.refunds", "ledger.refund.overdue", overdue(), T0)
    case = "refund/RR-9"
    first = notifier.notice(case, "escalation.refund.overdue")
    assert first.audience == "agency" and first.recipient == "BANK"
    assert first.deliveries["email"]["address"] == "liaison@bank.example" and first.pending_channels == [
        "email", "sms"]
    assert notifier.timers(REMIND) == {f"refund_overdue|{case}": T0 + timedelta(hours=1)}

    notifier.now = T0 + timedelta(hours=1, seconds=1)
    notifier.ingress.fire_timers()
    reminder = notifier.notice(case, "escalation.refund.overdue", reminder=1)
    assert reminder is not None and reminder.reminder == 1 and reminder.pending_channels == ["email", "sms"]
    assert notifier.timers(REMIND) == {f"refund_overdue|{case}": notifier.now + timedelta(hours=1)}

    completed = example("ledger.refund.completed", refund_id="RR-9", beneficiary_id=WHO)
    notifier.feed("ledger.refunds", "ledger.refund.completed", completed, notifier.now)
    escalation: Escalation = notifier.app.find(Escalation.create_id("refund_overdue", case))
    assert not escalation.open and escalation.close_reason == "ledger.refund.completed"
    assert notifier.timers(REMIND) == {}
    notifier.now += timedelta(hours=5)
    notifier.ingress.fire_timers()
    assert notifier.notice(case, "escalation.refund.overdue", reminder=2) is None


def test_reminders_stop_at_the_configured_number(notifier):
    notifier.feed("ledger.refunds", "ledger.refund.status_mismatch",
                  example("ledger.refund.status_mismatch", refund_id="V-1", sponsor_id=WHO), T0)
    for hour in range(1, 6):
        notifier.now = T0 + timedelta(hours=hour, seconds=hour)
        notifier.ingress.fire_timers()
    keys = [n for n in range(1, 5) if notifier.notice("refund/V-1", "escalation.refund.status_mismatch", n)]
    assert keys == [1, 2] and notifier.timers(REMIND) == {}


def test_a_burst_of_one_case_sends_only_its_last_message_and_a_later_one_goes_out_too(notifier):
    notifier.contact(T0 - timedelta(days=1), mobile="+966501234567", language="en")
    requested = example("ledger.refund.requested", refund_id="RR-1", beneficiary_id=WHO, state="AWAITING_HOLD",
                        route="BANK")
    ordered = example("ledger.refund.ordered", refund_id="RR-1", beneficiary_id=WHO, route="BANK")
    completed = example("ledger.refund.completed", refund_id="RR-1", beneficiary_id=WHO)
    notifier.feed("ledger.refunds", "ledger.refund.requested", requested, T0)
    notifier.feed("ledger.refunds", "ledger.refund.ordered", ordered, T0 + timedelta(seconds=1))
    notifier.feed("ledger.refunds", "ledger.refund.completed", completed, T0 + timedelta(days=2))
    case = "refund/RR-1"
    assert notifier.notice(case, "refund.requested.bank").deliveries["sms"]["state"] == SUPERSEDED
    assert notifier.notice(case, "refund.ordered").deliveries["sms"]["state"] == PENDING
    assert notifier.notice(case, "refund.completed").deliveries["sms"]["state"] == PENDING
    assert set(notifier.timers(DELIVER)) == {f"sms|{case}:refund.ordered", f"sms|{case}:refund.completed"}
    superseded = [e for e in notifier.published() if e["type"] == "ledger.notification.superseded"]
    assert [(e["data"]["key"], e["data"]["superseded_by"]) for e in superseded] == [
        ("refund.requested.bank", f"{case}:refund.ordered")]


def test_a_later_step_that_arrives_first_is_still_the_one_message_of_its_burst(notifier):
    """Held comes on ledger.payments and ordered on ledger.refunds, at the same time: the notifier may
    read ordered first. Held and requested, arriving after it, are superseded, never sent after it."""
    notifier.contact(T0 - timedelta(days=1), mobile="+966501234567", language="ar")
    ordered = example("ledger.refund.ordered", refund_id="RR-2", beneficiary_id=WHO, route="BANK")
    held = example("ledger.balance.held", refund_id="RR-2", beneficiary_id=WHO)
    requested = example("ledger.refund.requested", refund_id="RR-2", beneficiary_id=WHO, state="AWAITING_HOLD",
                        route="BANK")
    notifier.feed("ledger.refunds", "ledger.refund.ordered", ordered, T0)
    notifier.feed("ledger.payments", "ledger.balance.held", held, T0)
    notifier.feed("ledger.refunds", "ledger.refund.requested", requested, T0)
    case = "refund/RR-2"
    assert notifier.notice(case, "refund.ordered").deliveries["sms"]["state"] == PENDING
    for key in ("refund.held", "refund.requested.bank"):
        late = notifier.notice(case, key)
        assert (late.deliveries, late.superseded_by) == ({}, f"{case}:refund.ordered")
    assert set(notifier.timers(DELIVER)) == {f"sms|{case}:refund.ordered"}
    superseded = [e["data"] for e in notifier.published() if e["type"] == "ledger.notification.superseded"]
    assert [(s["key"], s["superseded_by"], s["channels"]) for s in superseded] == [
        ("refund.held", f"{case}:refund.ordered", []), ("refund.requested.bank", f"{case}:refund.ordered", [])]


def test_a_delivery_is_retried_with_backoff_then_dead_lettered_and_a_success_is_recorded_once(notifier):
    notifier.contact(T0 - timedelta(days=1), mobile="+966501234567", email="c@example.com", language="ar")
    notifier.feed("ledger.payments", "ledger.payment.recorded",
                  example("ledger.payment.recorded", beneficiary_id=WHO, payment_id="P-1"), T0)
    notifier.now = T0 + timedelta(seconds=31)
    jobs = {job.channel: job for job in notifier.app.due_jobs()}
    assert set(jobs) == {"sms", "email"} and all(j.outgoing and j.attempt == 1 for j in jobs.values())
    assert "P-1" in jobs["sms"].outgoing.body and jobs["email"].outgoing.subject

    notifier.app.record([Result(jobs["sms"], error="gateway down"), Result(jobs["email"], provider_ref="<m1>")])
    notice = notifier.notice("payment/P-1", "payment.recorded")
    assert notice.deliveries["email"]["state"] == SENT and notice.deliveries["sms"]["attempts"] == 1
    assert notifier.timers(DELIVER) == {"sms|payment/P-1:payment.recorded": notifier.now + timedelta(seconds=5)}
    assert notifier.app.due_jobs() == []  # not yet: backing off

    for attempt, wait in ((2, 10), (3, 20)):
        notifier.now += timedelta(seconds=wait if attempt == 3 else 5)
        [job] = notifier.app.due_jobs()
        assert job.attempt == attempt
        notifier.app.record([Result(job, error="gateway down")])
    notice = notifier.notice("payment/P-1", "payment.recorded")
    assert notice.deliveries["sms"]["state"] == DEAD and notice.deliveries["sms"]["last_error"] == "gateway down"
    assert notifier.timers(DELIVER) == {}
    kinds = [(e["type"], e["data"].get("channel")) for e in notifier.published()]
    assert kinds == [("ledger.notification.sent", "email"), ("ledger.notification.dead_lettered", "sms")]


def test_a_refused_recipient_is_dead_lettered_at_once(notifier):
    notifier.contact(T0 - timedelta(days=1), email="c@example.com", language="ar")
    notifier.feed("ledger.payments", "ledger.payment.recorded",
                  example("ledger.payment.recorded", beneficiary_id=WHO, payment_id="P-2"), T0)
    notifier.now = T0 + timedelta(minutes=1)
    [job] = notifier.app.due_jobs()
    notifier.app.record([Result(job, error="recipient refused", permanent=True)])
    assert notifier.notice("payment/P-2", "payment.recorded").deliveries["email"]["state"] == DEAD


def test_a_message_with_no_contact_waits_then_is_dead_lettered_when_none_comes(notifier):
    notifier.feed("ledger.payments", "ledger.payment.recorded",
                  example("ledger.payment.recorded", beneficiary_id=WHO, payment_id="P-3"), T0)
    mid = message_id("payment/P-3", "payment.recorded")
    assert notifier.app.notice(mid).awaiting_contact and notifier.timers(CONTACT_WAIT) == {mid: T0 + timedelta(days=1)}
    notifier.now = T0 + timedelta(days=1, seconds=1)
    notifier.ingress.fire_timers()
    dead = [e["data"] for e in notifier.published() if e["type"] == "ledger.notification.dead_lettered"]
    assert [(d["message_id"], d["channel"], d["reason"]) for d in dead] == [(mid, None, "no_contact")]
    notifier.contact(notifier.now, mobile="+966501234567")  # too late: nothing is sent
    assert notifier.app.due_jobs() == [] and notifier.timers(DELIVER) == {}


def test_a_redelivered_or_replayed_ledger_event_queues_nothing_new(notifier):
    notifier.contact(T0 - timedelta(days=1), mobile="+966501234567")
    data = example("ledger.payment.recorded", beneficiary_id=WHO, payment_id="P-4")
    notifier.feed("ledger.payments", "ledger.payment.recorded", data, T0)
    before = notifier.app.recorder.max_notification_id()
    notifier.feed("ledger.payments", "ledger.payment.recorded", data, T0)  # a new CloudEvent id, same fact
    assert notifier.app.recorder.max_notification_id() == before
