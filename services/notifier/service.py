"""Notifier wiring: ``ledger.*`` + Absher's ``contacts`` -> tracked ingress; what was sent,
dead-lettered or superseded -> ``ledger.notifications``; the dispatcher beside it."""

from __future__ import annotations

from typing import Any

from services.kit.iban import mask
from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.notifier import application, dispatcher
from services.notifier.domain import Notice, NotifierError

TOPIC = "ledger.notifications"


def mask_address(channel: str | None, address: str | None) -> str | None:
    """An address as the ledger shows it: enough to recognise, not enough to use."""
    if not address:
        return None
    if channel == "email":
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if channel == "sms":
        return mask(address, keep=3)
    return address  # an agency webhook URL is not personal data


def _case_facts(case: str) -> dict[str, str]:
    kind, _, rest = case.partition("/")
    if kind == "visa":
        sponsor_id, export_number, serial_number = rest.split("/", 2)
        return {"sponsor_id": sponsor_id, "export_number": export_number, "serial_number": serial_number}
    return {f"{kind}_id": rest}


def _common(event: Any) -> dict[str, Any]:
    return {"message_id": event.message_id, "key": event.key, "audience": event.audience,
            "recipient": event.recipient, "case": event.case, **_case_facts(event.case),
            "cause_event_id": event.cause_id, "reminder": event.reminder}


def _sent(event: Notice.Sent) -> Outbound:
    return Outbound(TOPIC, event.recipient, "ledger.notification.sent", event.sent_at, {
        **_common(event), "channel": event.channel, "address": mask_address(event.channel, event.address),
        "language": event.language, "subject": event.subject, "body": event.body, "attempts": event.attempts,
        "sent_at": event.sent_at.isoformat(),
    }, subject=event.case)


def _dead_lettered(event: Notice.DeadLettered) -> Outbound:
    return Outbound(TOPIC, event.recipient, "ledger.notification.dead_lettered", event.at, {
        **_common(event), "channel": event.channel, "reason": event.reason, "attempts": event.attempts,
        "dead_lettered_at": event.at.isoformat(),
    }, subject=event.case)


def _superseded(event: Notice.Superseded) -> Outbound:
    return Outbound(TOPIC, event.recipient, "ledger.notification.superseded", event.at, {
        **_common(event), "superseded_by": event.by, "channels": list(event.channels),
        "superseded_at": event.at.isoformat(),
    }, subject=event.case)


TRANSLATIONS: dict[type, Any] = {
    Notice.Sent: _sent,
    Notice.DeadLettered: _dead_lettered,
    Notice.Superseded: _superseded,
}


def translate(event: Any) -> Outbound | None:
    outbound = TRANSLATIONS.get(type(event))
    return outbound(event) if outbound else None


SPEC = ServiceSpec(
    name="notifier",
    inbound_topics=("ledger.payments", "ledger.visas", "ledger.refunds", "contacts"),
    build_application=application.NotifierApplication,
    handlers=application.handlers,
    translate=translate,
    rejectable=(NotifierError,),
    outbound_topics=(TOPIC, "rejections"),
    timer_handlers=application.timer_handlers,
    tasks=dispatcher.tasks,
)
