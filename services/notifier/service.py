"""Notifier wiring: every ``ledger.*`` topic -> tracked ingress; messages -> ``ledger.notifications``."""

from __future__ import annotations

from typing import Any

from services.kit.outbox import Outbound
from services.kit.runtime import ServiceSpec
from services.notifier import application


def translate(event: Any) -> Outbound | None:
    return None  # no notification events yet


SPEC = ServiceSpec(
    name="notifier",
    inbound_topics=("ledger.payments", "ledger.visas", "ledger.refunds"),
    build_application=application.NotifierApplication,
    handlers=application.handlers,
    translate=translate,
    outbound_topics=("ledger.notifications", "rejections"),
)
