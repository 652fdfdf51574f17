"""The topics of the public contract (``INTERFACES.md``) and what each carries.

Partner topics carry the inbound types listed here, and only those: a type
sent to another topic is rejected (``wrong_topic``). The ``ledger.*`` topics
carry the services' own events; a service following one applies the types it
has handlers for and passes over the rest.
"""

from __future__ import annotations

INBOUND_TYPES: dict[str, frozenset[str]] = {
    "payments": frozenset({"payment.recorded", "payment.acknowledged", "fee.charged"}),
    "visas": frozenset({"visa.issued", "visa.status_changed"}),
    "cancellations": frozenset({"visa.cancellation_requested", "visa.cancellation_accepted"}),
    "refund-requests": frozenset({"refund.requested"}),
    "bank-returns": frozenset({"refund.completed", "refund.failed"}),
    # Decisions of agency staff on queued refunds (Jawazat: Absher pre-SADAD requests; MoFA: visa
    # refunds in manual review), published by the audit API.
    "refund-decisions": frozenset({"refund.approved", "refund.declined"}),
    # Absher: where a person (beneficiary or sponsor) is told, their registered mobile and email.
    "contacts": frozenset({"contact.updated"}),
}
INBOUND_TOPICS = tuple(INBOUND_TYPES)
LEDGER_TOPICS = ("ledger.payments", "ledger.visas", "ledger.refunds", "ledger.notifications")
OUTBOUND_TOPICS = (*LEDGER_TOPICS, "bank-refund-orders", "rejections")
ALL_TOPICS = INBOUND_TOPICS + OUTBOUND_TOPICS


def is_partner_topic(logical_topic: str) -> bool:
    return logical_topic in INBOUND_TYPES
