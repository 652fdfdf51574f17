"""Rebuild the audit read model from the services' event stores.

The read model is derived data: every ``ledger.*`` and ``rejections`` message
the audit projection ever consumed was published by a service's outbox relay
from that service's event store. This replays each store's notification log,
translates every domain event exactly as the relay does (same CloudEvent ids,
so a replay over a live read model changes nothing), and applies them to an
audit schema through the ordinary :class:`~services.audit.projections.Projection`.

Services are replayed one after the other (payments, visas, refunds, notifier:
each store in its own order), which is the order the read model's cross-table
updates need (a refund's payment exists before the refund updates it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.audit.projections import FOLLOWED_TOPICS, Projection, create_schema
from services.kit.envelope import RawMessage
from services.kit.outbox import OutboxRelay
from services.kit.pii import FieldCipher
from services.kit.settings import Settings

REPLAY_ORDER = ("payments", "visas", "refunds", "notifier")


def spec_of(service: str):
    from services.cli.stack import _spec

    return _spec(service)


@dataclass
class RebuildReport:
    notifications: int = 0          # stored events read from the event stores
    published: int = 0              # CloudEvents on topics the audit follows
    applied: int = 0                # new in the read model
    seconds: float = 0.0
    read_wait_seconds: float = 0.0  # of which waiting for the event store (pages are read ahead)
    per_service: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float | None:
        return round(self.published / self.seconds, 1) if self.seconds else None


class _Reader:
    """One service's event store, read in pages and translated like the outbox relay does."""

    def __init__(self, service: str, settings: Settings) -> None:
        spec = spec_of(service)
        self.app = spec.build_application(settings)
        # the relay's own translation (ids <aggregate>:<version>); it never publishes here
        self.relay = OutboxRelay(self.app, service, spec.translate, publisher=None, executor=None)  # type: ignore[arg-type]

    def page(self, position: int, limit: int) -> tuple[list[RawMessage], int, int]:
        notifications = self.app.notifications_after(position, limit)
        if not notifications:
            return [], position, 0
        records = self.relay._records(notifications)  # the one translation, shared on purpose
        messages = [RawMessage(topic=r.topic, partition=0, offset=notifications[-1].id, key=r.key, value=r.value)
                    for r in records if r.topic in FOLLOWED_TOPICS]
        return messages, notifications[-1].id, len(notifications)

    def close(self) -> None:
        self.app.close()


async def rebuild(settings: Settings, pool: asyncpg.Pool, *, services: Sequence[str] = REPLAY_ORDER,
                  batch: int = 2000) -> RebuildReport:
    """Replay every service's event store (``settings.database_url``) into the audit schema of
    ``pool`` (created if missing). Idempotent: events already projected are skipped."""
    await create_schema(pool)
    projection = Projection(pool, fields=FieldCipher.for_settings(settings))  # CIPHER_KEY: IBANs sealed
    report = RebuildReport()
    started = time.perf_counter()
    for service in services:
        service_started = time.perf_counter()
        reader = await asyncio.to_thread(_Reader, service, settings)
        counts = {"notifications": 0, "published": 0, "applied": 0}
        statements, round_trips = projection.statements, projection.round_trips
        try:
            position = 0
            pending = asyncio.create_task(asyncio.to_thread(reader.page, position, batch))
            while True:
                waiting = time.perf_counter()
                messages, position, n = await pending
                report.read_wait_seconds += time.perf_counter() - waiting
                if not n:
                    break
                pending = asyncio.create_task(asyncio.to_thread(reader.page, position, batch))  # read ahead
                counts["notifications"] += n
                counts["published"] += len(messages)
                if messages:
                    counts["applied"] += await projection.apply(messages)
        finally:
            await asyncio.to_thread(reader.close)
        counts["seconds"] = round(time.perf_counter() - service_started, 2)
        counts["statements"] = projection.statements - statements  # read-model statements, beyond ledger_events
        counts["round_trips"] = projection.round_trips - round_trips
        report.per_service[service] = counts
        report.notifications += counts["notifications"]
        report.published += counts["published"]
        report.applied += counts["applied"]
    report.seconds = time.perf_counter() - started
    return report
