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
import multiprocessing
import multiprocessing.util
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import asynccontextmanager
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

    def newest(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def page(self, first: int, last: int) -> tuple[list[Page], int]:
        """The followed messages of notifications ``first``..``last`` (ids), and how many were read."""
        notifications = self.app.recorder.select_notifications(start=first, limit=last - first + 1, stop=last)
        records = self.relay._records(notifications)  # the one translation, shared on purpose
        end = notifications[-1].id if notifications else last
        return [(r.topic, r.key, r.value, end) for r in records if r.topic in FOLLOWED_TOPICS], len(notifications)

    def close(self) -> None:
        self.app.close()


Page = tuple[str, bytes | None, bytes, int]  # topic, key, CloudEvent, the page's last notification id
_readers: dict[str, _Reader] = {}  # in a reader process: one per service, opened on its first page


async def pages(service: str, settings: Settings, readers_pool: Executor, batch: int,
                ahead: int) -> AsyncIterator[tuple[list[Page], int]]:
    """One service's store in pages of ``batch`` notification ids, in order, each with how many
    notifications it held; the ``ahead`` pages after it are being read meanwhile."""
    loop = asyncio.get_running_loop()
    newest = await loop.run_in_executor(readers_pool, _newest, service, settings)
    firsts = iter(range(1, newest + 1, batch))
    reading: deque[asyncio.Future] = deque()
    try:
        while True:
            while len(reading) <= ahead and (first := next(firsts, None)) is not None:
                reading.append(loop.run_in_executor(readers_pool, _read, service, settings, first,
                                                    min(first + batch - 1, newest)))
            if not reading:
                return
            yield await reading.popleft()
    finally:
        for future in reading:
            future.cancel()


async def _replay(service: str, settings: Settings, projection: Projection, report: RebuildReport,
                  readers_pool: Executor, batch: int, ahead: int) -> dict[str, Any]:
    started = time.perf_counter()
    counts: dict[str, Any] = {"notifications": 0, "published": 0, "applied": 0}
    statements, round_trips = projection.statements, projection.round_trips
    waiting = time.perf_counter()
    async for page, n in pages(service, settings, readers_pool, batch, ahead):
        report.read_wait_seconds += time.perf_counter() - waiting
        counts["notifications"] += n
        counts["published"] += len(page)
        if page:
            counts["applied"] += await projection.apply(
                [RawMessage(topic=topic, partition=0, offset=end, key=key, value=value)
                 for topic, key, value, end in page])
        waiting = time.perf_counter()
    counts["seconds"] = round(time.perf_counter() - started, 2)
    counts["statements"] = projection.statements - statements  # read-model statements, beyond ledger_events
    counts["round_trips"] = projection.round_trips - round_trips
    return counts


@asynccontextmanager
async def reading(readers: int | None = None) -> AsyncIterator[Executor]:
    """Where pages are read: ``readers`` processes (default :func:`reader_processes`), or with 0 one
    thread of this process."""
    readers = reader_processes() if readers is None else readers
    pool: Executor = (
        ProcessPoolExecutor(readers, mp_context=multiprocessing.get_context("spawn"),
                            initializer=_start_reader_process) if readers
        else ThreadPoolExecutor(1, thread_name_prefix="rebuild-reader"))
    try:
        yield pool
    finally:
        if not readers:
            await asyncio.get_running_loop().run_in_executor(pool, _close_readers)
        # reader processes close their stores as they exit (_start_reader_process); not on the loop
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _reader(service: str, settings: Settings) -> _Reader:
    if (reader := _readers.get(service)) is None:
        reader = _readers[service] = _Reader(service, settings)
    return reader


def _read(service: str, settings: Settings, first: int, last: int) -> tuple[list[Page], int]:
    """A page, read in a reader process (or thread)."""
    return _reader(service, settings).page(first, last)


def _newest(service: str, settings: Settings) -> int:
    return _reader(service, settings).newest()


def _close_readers() -> None:
    while _readers:
        _readers.popitem()[1].close()


def _start_reader_process() -> None:
    # a pool's worker ends with os._exit: atexit would not run, multiprocessing's finalizers do
    multiprocessing.util.Finalize(None, _close_readers, exitpriority=10)


def reader_processes() -> int:
    """Reading and translating the stores costs about as much as projecting: spare cores read."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


async def rebuild(settings: Settings, pool: asyncpg.Pool, *, services: Sequence[str] = REPLAY_ORDER,
                  batch: int = 2000, readers: int | None = None) -> RebuildReport:
    """Replay every service's event store (``settings.database_url``) into the audit schema of
    ``pool`` (created if missing). Idempotent: events already projected are skipped.

    Pages of ``batch`` notification ids are read and translated in ``readers`` processes (default
    :func:`reader_processes`; 0: one thread of this process), several ahead, and applied in order:
    reading and translating costs about as much as projecting.
    """
    await create_schema(pool)
    projection = Projection(pool, fields=FieldCipher.for_settings(settings))  # CIPHER_KEY: IBANs sealed
    report = RebuildReport()
    started = time.perf_counter()
    readers = reader_processes() if readers is None else readers
    async with reading(readers) as readers_pool:
        for service in services:
            counts = await _replay(service, settings, projection, report, readers_pool, batch, 2 * max(readers, 1))
            report.per_service[service] = counts
            report.notifications += counts["notifications"]
            report.published += counts["published"]
            report.applied += counts["applied"]
    report.seconds = time.perf_counter() - started
    return report

