"""The outbox relay: publish the event store's notification log to Kafka.

The relay reads notifications after the last published position, turns each
into a CloudEvent, publishes the batch, waits for every broker ack, and only
then records the new position. A crash between publish and record re-sends a
few events on restart; every CloudEvent id is deterministic
(``<aggregate id>:<version>``), so downstream consumers drop the duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification

from services.kit import envelope, metrics
from services.kit.executor import BlockingExecutor
from services.kit.kafka import Publisher, Record
from services.kit.rejections import REJECTION_TYPE, Rejection
from services.kit.store import LedgerApplication

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outbound:
    """A domain event as the outside world sees it."""

    topic: str                 # logical topic, e.g. "ledger.payments"
    key: str | None            # Kafka key: the beneficiary / sponsor id
    type: str                  # CloudEvent type, e.g. "ledger.payment.recorded"
    time: datetime             # when the fact happened
    data: dict[str, Any]
    subject: str | None = None


#: A domain event as zero, one or several CloudEvents (e.g. a ledger event and a bank order).
Translate = Callable[[Any], "Outbound | Sequence[Outbound] | None"]


def rejection_outbound(event: Rejection.Recorded) -> Outbound:
    original = event.original
    return Outbound(
        topic="rejections",
        key=original.get("key") if original.get("key_encoding") == "utf-8" else None,
        type=REJECTION_TYPE,
        time=event.rejected_at,
        subject=f"{event.topic}/{event.partition}/{event.offset}",
        data={
            "reason_code": event.reason_code,
            "reason": event.reason,
            "original": original,
            "event_id": event.event_id,
            "event_source": event.event_source,
            "event_type": event.event_type,
            "rejected_by": event.rejected_by,
            "rejected_at": event.rejected_at.isoformat(),
        },
    )


class OutboxRelay:
    """Publishes one application's new events, remembering how far it got."""

    def __init__(self, app: LedgerApplication, service: str, translate: Translate,
                 publisher: Publisher, executor: BlockingExecutor, *,
                 batch: int = 500, poll_interval: float = 0.2) -> None:
        self.app = app
        self.service = service
        self.source = f"refund-ledger/{service}"
        self.translate = translate
        self.publisher = publisher
        self.executor = executor
        self.batch = batch
        self.poll_interval = poll_interval
        self.position_name = "ledger"
        self._wake = asyncio.Event()
        self._publishing = asyncio.Lock()   # the loop and the shutdown drain never publish at once
        self._position: int | None = None

    def wake(self) -> None:
        """Tell the relay new events were just saved (saves a poll interval)."""
        self._wake.set()

    def _records(self, notifications: Sequence[Notification]) -> list[Record]:
        records = []
        for notification in notifications:
            domain_event = self.app.mapper.to_domain_event(notification)
            if isinstance(domain_event, Rejection.Recorded):
                translated: Outbound | Sequence[Outbound] | None = rejection_outbound(domain_event)
            else:
                translated = self.translate(domain_event)
            if translated is None:
                continue
            outbounds = [translated] if isinstance(translated, Outbound) else list(translated)
            event_id = f"{notification.originator_id}:{notification.originator_version}"
            for n, outbound in enumerate(outbounds):
                value = envelope.write(
                    # stable across re-publication; a second CloudEvent of the same domain event
                    # (another topic) gets its own id
                    event_id=event_id if n == 0 else f"{event_id}/{outbound.type}",
                    source=self.source,
                    event_type=outbound.type,
                    time=outbound.time,
                    data=outbound.data,
                    subject=outbound.subject,
                    extensions={"recordedat": domain_event.timestamp.isoformat(),
                                "sequence": str(notification.id)},
                )
                records.append(Record(outbound.topic, outbound.key.encode() if outbound.key else None, value))
        return records

    def _next(self, position: int) -> tuple[list[Record], int, int]:
        notifications = self.app.notifications_after(position, self.batch)
        newest = self.app.recorder.max_notification_id() or 0
        if not notifications:
            return [], position, newest
        return self._records(notifications), notifications[-1].id, newest

    async def run_once(self, position: int) -> int:
        """Publish the next batch after ``position``; return the new position."""
        records, new_position, newest = await self.executor.run(self._next, position)
        if new_position > position:
            if records:
                await self.publisher.publish(records)
                for record in records:
                    metrics.OUTBOX_PUBLISHED.labels(record.topic).inc()
            await self.executor.run(self.app.ingress_recorder.set_outbox_position,
                                    self.position_name, new_position)
        metrics.OUTBOX_BACKLOG.set(max(0, newest - new_position))
        return new_position

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until ``stopping``; :meth:`drain` publishes what is left."""
        self._position = await self.executor.run(self.app.ingress_recorder.outbox_position, self.position_name)
        backoff = self.poll_interval
        while not stopping.is_set():
            try:
                async with self._publishing:
                    before, self._position = self._position, await self.run_once(self._position)
            except Exception:  # broker or database away: keep trying, never skip
                log.exception("relay failed; retrying", extra={"position": self._position})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = self.poll_interval
            if self._position == before:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def drain(self, timeout: float) -> bool:
        """On shutdown: publish every event saved so far (within ``timeout``); True if caught up."""
        if self._position is None:
            return False
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._publishing:
            while asyncio.get_running_loop().time() < deadline:
                try:
                    before, self._position = self._position, await self.run_once(self._position)
                except Exception:
                    log.warning("outbox not drained at shutdown; the next start publishes the rest", exc_info=True)
                    return False
                if self._position == before:
                    return True
        return False
