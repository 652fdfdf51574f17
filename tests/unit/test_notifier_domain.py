"""The notifier's domain: deterministic notices, deliveries, bursts, contacts, escalations (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.notifier.config import NotifierSettings
from services.notifier.domain import (
    DEAD,
    PENDING,
    SENT,
    SUPERSEDED,
    CaseThread,
    Contact,
    Escalation,
    Meeting,
    Notice,
    message_id,
)
from services.notifier.service import mask_address, translate

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)


def notice(key: str = "refund.ordered", case: str = "refund/R-1", reminder: int = 0) -> Notice:
    return Notice(message_id(case, key, reminder), key, "citizen", "1012345672", case, "ev-1",
                  "ledger.refund.ordered", {"refund_id": "R-1"}, T0, reminder)


def test_a_message_id_is_the_case_and_the_state_it_reports():
    assert message_id("refund/R-1", "refund.ordered") == "refund/R-1:refund.ordered"
    assert message_id("refund/R-1", "escalation.refund.overdue", 2) == "refund/R-1:escalation.refund.overdue:reminder-2"
    assert Notice.create_id("refund/R-1:refund.ordered") == Notice.create_id("refund/R-1:refund.ordered")
    assert Notice.create_id("refund/R-1:refund.ordered") != Notice.create_id("refund/R-2:refund.ordered")


def test_addressing_opens_one_pending_delivery_per_channel_and_only_once():
    n = notice()
    n.address({"sms": "+966501234567", "email": "a@example.com"}, "en", T0)
    n.address({"sms": "+966500000000"}, "ar", T0)  # a second addressing changes nothing
    assert n.pending_channels == ["sms", "email"] and n.language == "en"
    assert n.deliveries["sms"]["address"] == "+966501234567"


def test_a_sent_delivery_is_recorded_once_with_its_attempts():
    n = notice()
    n.address({"sms": "+966501234567"}, "ar", T0)
    n.record_failure("sms", "gateway down", T0, T0 + timedelta(seconds=5))
    n.record_sent("sms", None, "text", "gw-1", T0 + timedelta(seconds=6))
    n.record_sent("sms", None, "text", "gw-1", T0 + timedelta(seconds=7))
    assert n.deliveries["sms"]["state"] == SENT and n.deliveries["sms"]["attempts"] == 2
    sent = [e for e in n.collect_events() if isinstance(e, Notice.Sent)]
    assert len(sent) == 1 and sent[0].attempts == 2


def test_a_failure_without_a_retry_time_dead_letters_the_delivery_with_its_reason():
    n = notice()
    n.address({"email": "a@example.com"}, "ar", T0)
    n.record_failure("email", "recipient refused", T0, None)
    assert n.deliveries["email"]["state"] == DEAD and n.deliveries["email"]["last_error"] == "recipient refused"
    n.record_sent("email", "s", "b", None, T0)  # sending after the dead letter is still the truth
    assert n.deliveries["email"]["state"] == SENT


def test_superseding_stops_only_the_pending_channels():
    n = notice("refund.requested.bank")
    n.address({"sms": "+966501234567", "email": "a@example.com"}, "ar", T0)
    n.record_sent("email", "s", "b", None, T0)
    assert n.supersede("refund/R-1:refund.ordered", T0) == ["sms"]
    assert n.deliveries == {**n.deliveries, "sms": {**n.deliveries["sms"], "state": SUPERSEDED}}
    assert n.deliveries["email"]["state"] == SENT


def test_a_thread_sees_a_burst_only_within_the_window():
    thread = CaseThread("1012345672", "refund/R-1")
    window = timedelta(seconds=30)
    assert thread.meet(T0, 1, window) is None
    thread.note("m1", T0, 1)
    assert thread.meet(T0 + timedelta(seconds=2), 1, window) == Meeting("m1", supersedes=True)
    assert thread.meet(T0 + timedelta(minutes=5), 1, window) is None
    assert thread.meet(T0 - timedelta(minutes=5), 1, window) is None


def test_in_a_burst_the_later_message_wins_by_time_then_by_journey_stage_whatever_arrives_first():
    """ordered (stage 7) arrives before the held (stage 6) it followed, at the same time: held loses."""
    thread = CaseThread("1012345672", "refund/R-1")
    window = timedelta(seconds=30)
    thread.note("ordered", T0, 7)
    assert thread.meet(T0, 6, window) == Meeting("ordered", supersedes=False)
    assert thread.meet(T0, 7, window) == Meeting("ordered", supersedes=True)  # same step again: arrival order
    assert thread.meet(T0 - timedelta(seconds=1), 9, window) == Meeting("ordered", supersedes=False)  # earlier
    assert thread.meet(T0 + timedelta(seconds=1), 0, window) == Meeting("ordered", supersedes=True)  # later
    thread.note("old", T0, None)  # noted before stages were recorded: time alone decides
    assert thread.meet(T0, 0, window) == Meeting("old", supersedes=True)
    assert thread.meet(T0 - timedelta(seconds=1), 9, window) == Meeting("old", supersedes=False)


def test_a_notice_superseded_before_it_was_addressed_records_it_once_and_is_never_addressed_after():
    n = notice("refund.held")
    assert n.supersede("refund/R-1:refund.ordered", T0) == []
    assert n.superseded_by == "refund/R-1:refund.ordered" and n.settled
    events = len(n.collect_events())
    assert n.supersede("refund/R-1:refund.ordered", T0) == [] and n.collect_events() == []
    n.undeliverable("no_contact", T0)
    assert events == 2 and n.collect_events() == [] and n.undelivered is None


def test_a_contact_keeps_the_newest_update_and_releases_what_waited():
    contact = Contact("1012345672")
    contact.wait("m1")
    contact.wait("m1")
    assert contact.update("+966501234567", None, "en", T0)
    assert not contact.update("+966500000000", None, "ar", T0 - timedelta(days=1))  # older: ignored
    assert contact.addresses == {"sms": "+966501234567"} and contact.language == "en"
    assert contact.release() == ["m1"] and contact.waiting == []


def test_a_notice_with_no_contact_in_time_is_dead_lettered_on_no_channel():
    n = notice()
    n.await_contact(T0)
    n.undeliverable("no_contact", T0 + timedelta(days=7))
    dead = [e for e in n.collect_events() if isinstance(e, Notice.DeadLettered)]
    assert len(dead) == 1 and dead[0].channel is None and dead[0].reason == "no_contact"
    assert translate(dead[0]).data["channel"] is None and n.settled


def test_an_escalation_closes_once():
    e = Escalation("refund_overdue", "refund/R-1", "escalation.refund.overdue", "BANK", {}, "ev", "t", T0,
                   T0 + timedelta(days=2))
    assert e.open and e.close("ledger.refund.completed", T0) and not e.close("again", T0) and not e.open


def test_backoff_doubles_and_is_capped():
    config = NotifierSettings(retry_base=timedelta(seconds=5), retry_max=timedelta(seconds=60))
    assert [config.backoff(n).total_seconds() for n in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]


def test_channels_are_those_configured():
    assert NotifierSettings().channels == ("webhook",)
    assert NotifierSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMS_GATEWAY_URL": "http://127.0.0.1:1/sms"}
                                     ).channels == ("email", "sms", "webhook")


def test_the_published_sent_event_masks_the_address_and_names_the_case():
    n = notice()
    n.address({"sms": "+966501234567"}, "ar", T0)
    n.record_sent("sms", None, "نص", "gw", T0)
    sent = translate(n.collect_events()[-1])
    assert sent.type == "ledger.notification.sent" and sent.topic == "ledger.notifications"
    assert sent.data["address"] == mask_address("sms", "+966501234567") and "0123" not in sent.data["address"]
    assert sent.data["refund_id"] == "R-1" and sent.data["body"] == "نص" and sent.data["attempts"] == 1
    assert mask_address("email", "citizen@example.com") == "c***@example.com"
    assert PENDING != SENT
