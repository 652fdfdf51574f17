"""The dispatcher: sends the deliveries that are due and records what each channel answered.

One replica dispatches at a time: it holds a PostgreSQL advisory lock on its
own connection (released by the server if the replica dies), so two replicas
never send the same message. The durable ``deliver`` timer of a delivery stays
until its outcome is recorded: a crash after a send and before the record
sends once more with the same idempotency key (the receiver's to drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

import psycopg

from services.kit import metrics
from services.kit.runtime import TRANSIENT, LedgerRuntime
from services.notifier.application import Job, NotifierApplication, Result
from services.notifier.channels import Channel, DeliveryFailed, build_channels

log = logging.getLogger(__name__)

GAUGE_EVERY = 5.0  # seconds between refreshes of the pending gauge


class Dispatcher:
    def __init__(self, runtime: LedgerRuntime) -> None:
        assert isinstance(runtime.application, NotifierApplication)
        self.runtime = runtime
        self.app: NotifierApplication = runtime.application
        self.config = self.app.config
        self.channels: dict[str, Channel] = build_channels(self.config)
        self.limit = asyncio.Semaphore(self.config.concurrency)
        schema = self.app.ingress_recorder.datastore.schema
        self.lock_key = int.from_bytes(hashlib.sha256(f"refund-ledger/{schema}/dispatch".encode()).digest()[:8],
                                       "big", signed=True)
        self._lock_conn: psycopg.Connection | None = None
        self._gauge_at = 0.0

    # ------------------------------------------------------------------ leadership

    def _try_lead(self) -> bool:
        """Hold the dispatch lock (blocking; executor). False while another replica holds it."""
        if self._lock_conn is not None and not self._lock_conn.closed:
            try:
                self._lock_conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                self._release()
        conn = psycopg.connect(self.runtime.settings.database_url, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,)).fetchone()
        if row and row[0]:
            self._lock_conn = conn
            log.info("this replica dispatches notifications")
            return True
        conn.close()
        return False

    def _release(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._lock_conn.close()
        self._lock_conn = None

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        stopping = self.runtime.stopping
        await self.runtime.initialized.wait()
        try:
            while not stopping.is_set():
                sent = 0
                try:
                    if await self.runtime.executor.run(self._try_lead):
                        sent = await self.dispatch_once()
                        await self._refresh_gauge()
                except TRANSIENT as error:
                    log.warning("dispatch failed; retrying", extra={"error": str(error)})
                    await self.runtime.executor.run(self._release)
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), timeout=self.config.dispatch_interval)
        finally:
            for channel in self.channels.values():
                await channel.close()
            self._release()

    async def dispatch_once(self) -> int:
        """Send every due delivery (up to a batch) and record the outcomes; the number handled."""
        jobs: list[Job] = await self.runtime.executor.run(self.app.due_jobs, 100)
        if not jobs:
            return 0
        results = await asyncio.gather(*(self._send(job) for job in jobs))
        async with self.runtime.writing:
            await self.runtime.executor.run(self.app.record, results)
        assert self.runtime.relay is not None
        self.runtime.relay.wake()
        return len(jobs)

    async def _send(self, job: Job) -> Result:
        if job.outgoing is None:
            return Result(job)
        channel = self.channels[job.channel]
        async with self.limit:
            try:
                reference = await asyncio.wait_for(channel.send(job.outgoing), self.config.send_timeout * 2)
            except DeliveryFailed as failed:
                log.warning("delivery failed", extra={"channel": job.channel, "attempt": job.attempt,
                                                      "error": failed.reason, "permanent": failed.permanent})
                return Result(job, error=failed.reason, permanent=failed.permanent)
            except TimeoutError:
                return Result(job, error=f"{job.channel} timed out")
        return Result(job, provider_ref=reference)

    async def _refresh_gauge(self) -> None:
        if time.monotonic() - self._gauge_at < GAUGE_EVERY:
            return
        self._gauge_at = time.monotonic()
        pending = await self.runtime.executor.run(self.app.pending_by_channel)
        for channel in ("email", "sms", "webhook"):
            metrics.NOTIFICATIONS_PENDING.labels(channel).set(pending.get(channel, 0))


def tasks(runtime: LedgerRuntime):
    """The notifier's background work beside its ingress (``ServiceSpec.tasks``)."""
    return [Dispatcher(runtime).run()]
