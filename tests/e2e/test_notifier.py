"""The notifier end to end: partner events on Kafka -> payments, refunds -> ledger.* ->
the notifier (a real process) -> a real local SMTP server and HTTP SMS gateway.

Each test reads what actually arrived and compares it with the approved
catalogue rendered from the ledger's own facts (read back from the ledger
topics), in the recipient's language; emails carry Arabic then English.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from services.cli.sinks import MailSink, SmsGateway
from services.kit import liaisons
from services.kit.catalogue import Catalogue
from services.kit.identity import with_check_digit
from tests.conftest import fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.harness import ServiceProcess, produce, read_topic, start_all, wait_for
from tests.factories import IBAN_OWN, acknowledgement, bank_completion, cloudevent, payment, refund_request

pytestmark = pytest.mark.e2e

CATALOGUE = Catalogue.load()
ARABIC = re.compile("[\u0600-\u06ff]")
REMINDER_SECONDS = 5


@pytest.fixture(scope="module")
def world(postgres, kafka):
    """payments + refunds + notifier, with a mail server and an SMS gateway on loopback."""
    database_url = fresh_database(postgres)
    prefix = f"n{uuid.uuid4().hex[:8]}."
    with MailSink() as mail, SmsGateway() as sms:
        env = service_env(database_url, kafka.bootstrap_servers, prefix, TIMER_INTERVAL="0.5",
                          SMTP_HOST="127.0.0.1", SMTP_PORT=str(mail.port), SMTP_STARTTLS="false",
                          SMS_GATEWAY_URL=sms.url, NOTIFIER_COALESCE_SECONDS="2",
                          NOTIFIER_RETRY_BASE_SECONDS="0.5", NOTIFIER_RETRY_MAX_SECONDS="1",
                          NOTIFIER_MAX_ATTEMPTS="1000", NOTIFIER_DISPATCH_INTERVAL="0.2",
                          NOTIFIER_REMINDER_SECONDS=str(REMINDER_SECONDS), NOTIFIER_MAX_REMINDERS="3")
        services = {name: ServiceProcess(name, env) for name in ("payments", "refunds", "notifier")}
        try:
            start_all(services.values())
            yield World(kafka.bootstrap_servers, prefix, services, mail, sms)
        finally:
            for process in services.values():
                process.stop()


class World:
    def __init__(self, bootstrap, prefix, services, mail: MailSink, sms: SmsGateway) -> None:
        self.bootstrap, self.prefix, self.services, self.mail, self.sms = bootstrap, prefix, services, mail, sms

    def send(self, topic: str, key: str, event_type: str, data: dict, **kwargs) -> None:
        produce(self.bootstrap, [(self.prefix + topic, key.encode(), cloudevent(event_type, data, **kwargs))])

    def register(self, person: str, *, mobile: str | None, email: str | None, language: str) -> None:
        contact = {"person_id": person, "language": language, "updated_at": now().isoformat()}
        contact |= {"mobile": mobile} if mobile else {}
        contact |= {"email": email} if email else {}
        self.send("contacts", person, "contact.updated", contact, source="absher")

    def ledger_event(self, topic: str, event_type: str, **match: str) -> dict:
        """The data of the ledger event of this type whose data has these values."""
        def find() -> dict | None:
            for record in read_topic(self.bootstrap, self.prefix + topic, timeout=5):
                event = json.loads(record.value)
                if event["type"] == event_type and all(event["data"].get(k) == v for k, v in match.items()):
                    return event["data"]
            return None
        return wait_for(find, 60, f"{event_type} {match} on {topic}", interval=0.5)

    def sms_to(self, mobile: str) -> list[str]:
        return [m["text"] for m in self.sms.messages() if m["to"] == mobile]

    def await_sms(self, phone: str, done, what: str, timeout: float = 60) -> list[str]:
        """Wait until the SMS received by ``phone`` satisfy ``done``; show them if they never do."""
        try:
            return wait_for(lambda: done(self.sms_to(phone)) and self.sms_to(phone), timeout, what)
        except AssertionError as error:
            raise AssertionError(f"{error}\nreceived: {self.sms_to(phone)!r}") from None

    def mail_to(self, address: str) -> list:
        return [m for m in self.mail.messages() if address in m.recipients]

    def no_repeats(self) -> None:
        sms_keys = Counter(m["idempotency_key"] for m in self.sms.messages())
        mail_ids = Counter(m.message_id for m in self.mail.messages())
        assert [k for k, n in sms_keys.items() if n > 1] == [], "an SMS went out twice"
        assert [k for k, n in mail_ids.items() if n > 1] == [], "an email went out twice"
        assert len({m["text"] + m["to"] for m in self.sms.messages()}) == len(self.sms.messages())


def now() -> datetime:
    return datetime.now(timezone(timedelta(hours=3)))


def person() -> str:
    return with_check_digit("1" + str(uuid.uuid4().int)[:8])


def mobile() -> str:
    return "+9665" + str(uuid.uuid4().int)[:8]


def sms_text(key: str, language: str, facts: dict, reminder: int = 0) -> str:
    return CATALOGUE.render(key, language, "sms", facts, reminder).body


def email_text(key: str, facts: dict, reminder: int = 0) -> tuple[str, str]:
    rendered = CATALOGUE.render_bilingual(key, "email", facts, reminder)
    return rendered.subject or "", rendered.body


def test_a_bank_refund_tells_each_citizen_once_per_moment_in_their_language(world):
    """Payment, then a bank refund (requested, held and ordered in the same second: one message), then
    the bank's completion. Arabic SMS + bilingual email for one citizen, English SMS for the other."""
    arabic, english = person(), person()
    phones = {arabic: mobile(), english: mobile()}
    inbox = f"{arabic}@example.com"
    world.register(arabic, mobile=phones[arabic], email=inbox, language="ar")
    world.register(english, mobile=phones[english], email=None, language="en")
    for who in (arabic, english):
        world.send("payments", who, "payment.recorded", payment(f"P-{who}", beneficiary_id=who, amount=15000,
                                                                paid_at=now()))
    for who in (arabic, english):
        wait_for(lambda w=who: world.sms_to(phones[w]), 60, f"the payment SMS to {who}")
        world.send("refund-requests", who, "refund.requested",
                   refund_request(f"RR-{who}", beneficiary_id=who, amount=5000, at=now()))
    for who, language in ((arabic, "ar"), (english, "en")):
        ordered = world.ledger_event("ledger.refunds", "ledger.refund.ordered", refund_id=f"RR-{who}")
        expected = sms_text("refund.ordered", language, ordered)
        world.await_sms(phones[who], lambda texts, e=expected: e in texts, f"the refund SMS to {who}: {expected!r}")
    for who in (arabic, english):  # a later moment: not part of the burst
        world.send("bank-returns", who, "refund.completed",
                   bank_completion(f"RR-{who}", amount=5000, reference=f"BR-{who}", at=now() + timedelta(seconds=5)))

    for who, language in ((arabic, "ar"), (english, "en")):
        recorded = world.ledger_event("ledger.payments", "ledger.payment.recorded", payment_id=f"P-{who}")
        ordered = world.ledger_event("ledger.refunds", "ledger.refund.ordered", refund_id=f"RR-{who}")
        completed = world.ledger_event("ledger.refunds", "ledger.refund.completed", refund_id=f"RR-{who}")
        expected = [sms_text("payment.recorded", language, recorded), sms_text("refund.ordered", language, ordered),
                    sms_text("refund.completed", language, completed)]
        received = wait_for(lambda w=who: len(world.sms_to(phones[w])) >= 3 and world.sms_to(phones[w]), 60,
                            f"three SMS to {who}")
        assert received == expected  # requested and held were superseded by ordered: one SMS for the burst
        assert all(bool(ARABIC.search(text)) == (language == "ar") for text in received)
        assert "150.00" in received[0] and "50.00" in received[1] and IBAN_OWN[-4:] in received[1]
        assert IBAN_OWN not in received[1], "an SMS shows the whole IBAN"

    mails = wait_for(lambda: len(world.mail_to(inbox)) >= 3 and world.mail_to(inbox), 60, "three emails")
    facts = [world.ledger_event("ledger.payments", "ledger.payment.recorded", payment_id=f"P-{arabic}"),
             world.ledger_event("ledger.refunds", "ledger.refund.ordered", refund_id=f"RR-{arabic}"),
             world.ledger_event("ledger.refunds", "ledger.refund.completed", refund_id=f"RR-{arabic}")]
    for mail, key, fact in zip(mails, ("payment.recorded", "refund.ordered", "refund.completed"), facts, strict=True):
        subject, body = email_text(key, fact)
        assert (mail.subject, mail.body.strip()) == (subject, body.strip())
        arabic_part, english_part = body.split("----------")
        assert ARABIC.search(arabic_part) and not ARABIC.search(english_part)

    outcomes = [json.loads(r.value) for r in read_topic(world.bootstrap, world.prefix + "ledger.notifications")]
    superseded = [e["data"] for e in outcomes if e["type"] == "ledger.notification.superseded"]
    assert {s["key"] for s in superseded if s["recipient"] == arabic} == {"refund.requested.bank", "refund.held"}
    world.no_repeats()


def test_a_channel_that_is_down_delivers_everything_when_it_comes_back(world):
    notifier = world.services["notifier"]
    people = [person() for _ in range(3)]
    phones = {who: mobile() for who in people}
    failed_before = notifier.metric("refund_ledger_notifications_failed_total", channel="sms")
    world.sms.stop()
    try:
        for who in people:
            world.register(who, mobile=phones[who], email=f"{who}@example.com", language="ar")
            world.send("payments", who, "payment.recorded", payment(f"P-{who}", beneficiary_id=who, paid_at=now()))
        for who in people:  # email still works while SMS is down
            wait_for(lambda w=who: world.mail_to(f"{w}@example.com"), 60, f"the email to {who}")
        wait_for(lambda: notifier.metric("refund_ledger_notifications_failed_total", channel="sms") > failed_before,
                 60, "failed SMS attempts")
        wait_for(lambda: notifier.metric("refund_ledger_notifications_pending", channel="sms") >= len(people), 60,
                 "the SMS pending")
        assert all(world.sms_to(phones[who]) == [] for who in people)
    finally:
        world.sms.start()
    for who in people:
        recorded = world.ledger_event("ledger.payments", "ledger.payment.recorded", payment_id=f"P-{who}")
        expected = [sms_text("payment.recorded", "ar", recorded)]
        wait_for(lambda w=who, e=expected: world.sms_to(phones[w]) == e, 60, f"the SMS to {who} after the outage")
    wait_for(lambda: notifier.metric("refund_ledger_notifications_pending", channel="sms") == 0, 30, "nothing pending")
    world.no_repeats()


def test_restarting_the_notifier_mid_run_sends_nothing_twice_and_loses_nothing(world):
    notifier = world.services["notifier"]
    people = [person() for _ in range(12)]
    phones = {who: mobile() for who in people}
    for who in people:
        world.register(who, mobile=phones[who], email=None, language="en")
        world.send("payments", who, "payment.recorded", payment(f"P-{who}", beneficiary_id=who, paid_at=now()))
    wait_for(lambda: any(world.sms_to(phones[who]) for who in people), 60, "the first SMS")
    notifier.stop()  # SIGTERM mid-run: what was sent is recorded before it exits
    notifier.start().wait_ready()
    for who in people:
        recorded = world.ledger_event("ledger.payments", "ledger.payment.recorded", payment_id=f"P-{who}")
        expected = [sms_text("payment.recorded", "en", recorded)]
        wait_for(lambda w=who, e=expected: world.sms_to(phones[w]) == e, 90, f"exactly one SMS to {who}")
    world.no_repeats()


def test_an_unreflected_payment_escalates_to_the_agency_liaison_is_reminded_and_closes(world):
    who = person()
    phone = mobile()
    world.register(who, mobile=phone, email=None, language="ar")
    late = now() - timedelta(hours=25)  # older than the 24 h the agency has to reflect it
    world.send("payments", who, "payment.recorded", payment(f"P-{who}", beneficiary_id=who, agency="JAWAZAT",
                                                            paid_at=late), time=late)
    unreflected = world.ledger_event("ledger.payments", "ledger.payment.unreflected", payment_id=f"P-{who}")
    liaison = liaisons.registry().for_agency("JAWAZAT")

    def escalations() -> list:
        return [m for m in world.mail_to(liaison.email) if f"P-{who}" in m.body]

    first = email_text("escalation.payment.unreflected", unreflected)
    reminder = email_text("escalation.payment.unreflected", unreflected, reminder=1)
    try:
        wait_for(lambda: [m.subject for m in escalations()][:2] == [first[0], reminder[0]], 60,
                 "the escalation and its first reminder")
    except AssertionError as error:
        raise AssertionError(f"{error}: {[m.subject for m in world.mail_to(liaison.email)]}, "
                             f"expected {[first[0], reminder[0]]}") from None
    assert escalations()[0].body.strip() == first[1].strip()
    assert sms_text("escalation.payment.unreflected", "ar", unreflected) in [
        m["text"] for m in world.sms.messages() if m["to"] == liaison.phone]
    assert sms_text("payment.unreflected", "ar", unreflected) in world.sms_to(phone)

    world.send("payments", who, "payment.acknowledged", acknowledgement(f"P-{who}", at=now()))
    resolved = world.ledger_event("ledger.payments", "ledger.payment.unreflected_resolved", payment_id=f"P-{who}")
    closing = email_text("escalation.payment.unreflected_resolved", resolved)
    wait_for(lambda: closing[0] in [m.subject for m in escalations()], 60, "the resolution to the liaison")
    at_closing = len(escalations())
    time.sleep(REMINDER_SECONDS + 2)  # past the next reminder time: a closed escalation is not reminded again
    assert len(escalations()) == at_closing, [m.subject for m in escalations()]
    world.no_repeats()


def test_a_message_waits_for_a_contact_and_a_repeated_ledger_event_sends_nothing_new(world):
    who = person()
    phone = mobile()
    world.send("payments", who, "payment.recorded", payment(f"P-{who}", beneficiary_id=who, paid_at=now()))
    recorded = world.ledger_event("ledger.payments", "ledger.payment.recorded", payment_id=f"P-{who}")
    time.sleep(3)  # past the coalescing window: with no contact, nothing can go out yet
    assert world.sms_to(phone) == []
    world.register(who, mobile=phone, email=None, language="en")
    expected = [sms_text("payment.recorded", "en", recorded)]
    world.await_sms(phone, lambda texts: texts == expected, "the waiting SMS once the contact arrived")
    # the same ledger fact again, as a replay with a new CloudEvent id: the message id is the case + state
    produce(world.bootstrap, [(world.prefix + "ledger.payments", who.encode(), cloudevent(
        "ledger.payment.recorded", recorded, source="payments", time=now()))])
    time.sleep(4)
    assert world.sms_to(phone) == expected
    world.no_repeats()
