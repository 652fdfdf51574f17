"""The notifier application.

It follows every ``ledger.*`` topic with the kit's tracked ingress, so its
position in each topic is recorded with its own events. Choosing and sending
messages (catalogue, channels, escalations) builds on this; until then each
ledger event is acknowledged and tracked without producing a message.
"""

from __future__ import annotations

from services.kit.envelope import Envelope
from services.kit.ingress import Handler, UnitOfWork
from services.kit.store import LedgerApplication

#: The ledger event types the notifier follows.
FOLLOWED_TYPES = (
    "ledger.payment.recorded", "ledger.payment.acknowledged", "ledger.balance.credited",
    "ledger.balance.charged", "ledger.visa.issued", "ledger.visa.status_changed",
    "ledger.visa.cancellation_requested", "ledger.visa.cancellation_accepted",
    "ledger.refund.requested", "ledger.refund.completed", "ledger.refund.failed",
)


class NotifierApplication(LedgerApplication):
    name = "notifier"


def follow(uow: UnitOfWork, envelope: Envelope) -> None:
    """A ledger event that needs no message yet: tracked, nothing sent."""


def handlers(_: LedgerApplication) -> dict[str, Handler]:
    return dict.fromkeys(FOLLOWED_TYPES, follow)
