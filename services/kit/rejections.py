"""Rejected input, recorded as events in the rejecting service's own store.

A rejection is saved in the same transaction as the rest of its batch and is
published to the ``rejections`` topic by the outbox relay, so it is never lost
between "decided" and "told".
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

REJECTION_TYPE = "event.rejected"
_NAMESPACE = uuid5(NAMESPACE_URL, "https://refund-ledger/rejections")


def encode_bytes(raw: bytes | None) -> tuple[str | None, str]:
    """Bytes as UTF-8 text when they are, base64 otherwise; with the encoding used."""
    if raw is None:
        return None, "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


class Rejection(Aggregate):
    """One inbound message that could not be applied, and why."""

    @staticmethod
    def create_id(topic: str, partition: int, offset: int) -> UUID:
        return uuid5(_NAMESPACE, f"{topic}:{partition}:{offset}")

    class Recorded(Aggregate.Created):
        """Version 2 adds ``event_dataschema``: which version of its type's schema the rejected event
        named (``services.kit.versions``). Stored version 1 events load through ``upcast_v1_v2``."""

        class_version = 2
        topic: str
        partition: int
        offset: int
        reason_code: str
        reason: str
        original: dict[str, Any]
        event_id: str | None
        event_source: str | None
        event_type: str | None
        rejected_by: str
        rejected_at: datetime
        event_dataschema: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["event_dataschema"] = None  # v1 was written before events named their schema version

    @event(Recorded)
    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        reason_code: str,
        reason: str,
        original: dict[str, Any],
        event_id: str | None,
        event_source: str | None,
        event_type: str | None,
        rejected_by: str,
        rejected_at: datetime,
        event_dataschema: str | None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason_code = reason_code
        self.reason = reason
        self.original = original
        self.event_id = event_id
        self.event_source = event_source
        self.event_type = event_type
        self.rejected_by = rejected_by
        self.rejected_at = rejected_at
        self.event_dataschema = event_dataschema
