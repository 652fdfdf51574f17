"""The audit timeline shows what the citizen was told: each ledger.notification.* entry carries
the message as sent (channel, masked address, language, words) or why it was not sent."""

from __future__ import annotations

from services.notifier.domain import Notice, message_id
from services.notifier.service import translate
from tests.integration.test_audit_api import (  # noqa: F401 (pytest fixtures used by name)
    IBAN_OTHER,
    client,
    decisions,
    get,
    ledger,
    pool,
    riyadh,
)


def notified(model, refund_id: str, key: str, at, *, sent: bool) -> None:
    """The notifier's outcome event for one message of the case, published as the notifier does."""
    beneficiary = model.cases[refund_id]["beneficiary_id"]
    notice = Notice(message_id(f"refund/{refund_id}", key), key, "citizen", beneficiary, f"refund/{refund_id}",
                    "ev-1", "ledger.refund.ordered", {"refund_id": refund_id}, at)
    notice.address({"sms": "+966501234567"}, "en", at)
    if sent:
        notice.record_sent("sms", None, f"Your refund {refund_id} was ordered.", "gw-1", at)
    else:
        notice.record_failure("sms", "HTTP 400: unknown number", at, None)
    outbound = translate(notice.collect_events()[-1])
    model.emit("ledger.notifications", outbound.type, outbound.time, outbound.data, beneficiary, outbound.subject)


async def test_the_case_timeline_shows_the_message_sent_and_the_one_that_could_not_be(ledger, client):  # noqa: F811
    ledger.refund_requested("AB-7", riyadh(2, 10), route="JAWAZAT", iban=IBAN_OTHER)
    ledger.ordered("AB-7", riyadh(3, 16, 30), decided_by="jawazat:e.alharbi")
    notified(ledger, "AB-7", "refund.ordered.jawazat", riyadh(3, 16, 31), sent=True)
    notified(ledger, "AB-7", "refund.ordered", riyadh(3, 16, 32), sent=False)
    await ledger.project()

    case = await get(client, "/api/v1/refunds/AB-7")
    messages = [(e["type"], e["message"]) for e in case["timeline"] if e["message"]]
    assert messages == [
        ("ledger.notification.sent", {
            "key": "refund.ordered.jawazat", "audience": "citizen", "channel": "sms", "address": "**********567",
            "language": "en", "subject": None, "body": "Your refund AB-7 was ordered.", "reason": None}),
        ("ledger.notification.dead_lettered", {
            "key": "refund.ordered", "audience": "citizen", "channel": "sms", "address": None, "language": None,
            "subject": None, "body": None, "reason": "HTTP 400: unknown number"}),
    ]
    assert all(e["message"] is None for e in case["timeline"] if not e["type"].startswith("ledger.notification."))
