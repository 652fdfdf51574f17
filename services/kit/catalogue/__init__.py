"""The notifier's message catalogue: approved words for every state change, Arabic first.

    catalogue = Catalogue.load()
    key = catalogue.message_for("ledger.refund.rejected", event.data)   # "refund.rejected.iban_not_payer"
    sms = catalogue.render(key, "ar", "sms", event.data)                 # Rendered(subject=None, body=...)
    line = catalogue.tell_the_citizen("ORDERED", "BANK", "en", case_facts)
    entries = catalogue.faq()
"""

from services.kit.catalogue.catalogue import (
    AUDIENCES,
    CHANNELS,
    KINDS,
    Answer,
    Catalogue,
    CatalogueError,
    FaqEntry,
    Message,
    MissingFact,
    Rendered,
    When,
    read_data,
)
from services.kit.catalogue.formatting import is_gsm7, sms_segments

__all__ = [
    "AUDIENCES",
    "CHANNELS",
    "KINDS",
    "Answer",
    "Catalogue",
    "CatalogueError",
    "FaqEntry",
    "Message",
    "MissingFact",
    "Rendered",
    "When",
    "is_gsm7",
    "read_data",
    "sms_segments",
]
