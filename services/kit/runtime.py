"""Faust wiring shared by every event-sourced service.

``create_faust_app`` is the app factory (nothing is created at import time).
``build_worker`` turns a :class:`ServiceSpec` into a Faust app whose agent feeds
batches into the tracked :class:`~services.kit.ingress.Ingress` and whose
:class:`LedgerRuntime` owns the application, the outbox relay and health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import psycopg
import psycopg_pool
from eventsourcing import persistence as es_persistence
from faust.contrib.asgi import serve_asgi
from faust.types import TP
from mode import Service

from services.kit import logs, metrics
from services.kit.envelope import RawMessage, SchemaRegistry, TimeBounds, resolve_schemas_dir
from services.kit.executor import BlockingExecutor
from services.kit.ingress import BatchOutcome, Handler, Ingress, TimerHandler
from services.kit.kafka import Publisher, client_options, ensure_topics
from services.kit.memory import release_free_memory
from services.kit.outbox import OutboxRelay, Translate
from services.kit.settings import Settings
from services.kit.store import LedgerApplication
from services.kit.web import Health, operational_app

log = logging.getLogger(__name__)

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout,
             es_persistence.OperationalError, es_persistence.InterfaceError, OSError)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's view of the Kafka security settings (the same as the kit's aiokafka clients)."""
    options = client_options(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=options["sasl_plain_username"], password=options["sasl_plain_password"],
                                     mechanism=options["sasl_mechanism"], ssl_context=options.get("ssl_context"))
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_faust_app(service: str, settings: Settings) -> faust.App:
    """The Faust app factory: every broker and web setting comes from ``settings``."""
    settings.require("kafka_bootstrap_servers")
    datadir = settings.data_dir or tempfile.mkdtemp(prefix=f"refund-ledger-{service}-")
    app = faust.App(
        f"{settings.topic_prefix}refund-ledger-{service}",
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        autodiscover=False,
        datadir=datadir,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout,
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval,
        broker_commit_interval=settings.kafka_commit_interval,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
    )
    if settings.malloc_trim_interval > 0:
        @app.timer(interval=settings.malloc_trim_interval)
        async def release_freed_memory() -> None:  # off the loop: a trim takes milliseconds on a large heap
            await asyncio.get_running_loop().run_in_executor(None, release_free_memory)
    return app


def record_lag(app: faust.App, messages: Sequence[RawMessage]) -> None:
    """Consumer lag per partition just applied: the fetcher's high-water mark minus the next offset."""
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        last[(message.topic, message.partition)] = max(message.offset, last.get((message.topic, message.partition), -1))
    for (topic, partition), offset in last.items():
        highwater = app.consumer.highwater(TP(topic, partition))
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, highwater - offset - 1))


def raw_message(event: faust.types.EventT) -> RawMessage:
    message = event.message
    return RawMessage(topic=message.topic, partition=message.partition, offset=message.offset,
                      key=message.key, value=message.value, timestamp_ms=int(message.timestamp * 1000))


async def retry_forever(what: str, action: Callable, health: Health, stopping: asyncio.Event | None = None,
                        transient: tuple[type[BaseException], ...] = TRANSIENT, *, every_error: bool = False):
    """Run ``action`` until it succeeds, backing off; report not-ready meanwhile.

    A ``transient`` error (a dependency away) is retried; any other error is raised, unless
    ``every_error``: then it is logged with its traceback and retried too. Applying a batch of
    consumed records needs that: an error that escaped the agent would let Faust acknowledge the
    batch unapplied (``take_events`` acks its buffer when the agent leaves it), and the worker would
    go on after it, the batch lost. A batch is retried until it applies; a stuck one shows as a
    problem on ``/readyz`` and as consumer lag. With ``stopping`` set, the error is raised."""
    delay = 0.2
    while True:
        try:
            result = await action()
        except Exception as error:
            if not every_error and not isinstance(error, transient):
                raise
            health.set_problem(what, f"retrying: {type(error).__name__}: {error}"[:300])
            log.warning("%s failed; retrying in %.1f s", what, delay, extra={"error": str(error)},
                        exc_info=not isinstance(error, transient))
            if stopping is not None and stopping.is_set():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        else:
            health.set_problem(what, None)
            return result


class ProgressWatchdog:
    """Liveness from progress, not from the process merely answering HTTP.

    A Faust worker has been seen to stop consuming while it looks healthy
    (looping on "Marking the coordinator dead" after a broker restart,
    partitions gone silent after a rebalance). The worker is stalled when
    records wait on its partitions, no batch was applied for ``stall_after``
    seconds and no known cause is being retried (an outage the readiness
    check already reports); then ``/healthz`` answers 503 and the orchestrator
    restarts it, which is safe at any moment.
    """

    def __init__(self, stall_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after = stall_after
        self.clock = clock
        self.last_progress = clock()

    def progressed(self) -> None:
        self.last_progress = self.clock()

    def stalled_for(self, waiting: int, excused: bool) -> float | None:
        """Seconds without progress while ``waiting`` records wait, once past ``stall_after``; else None."""
        if waiting <= 0 or excused:
            self.progressed()
            return None
        idle = self.clock() - self.last_progress
        return idle if idle > self.stall_after else None


async def records_waiting(app: faust.App, runtime: LedgerRuntime) -> int:
    """Records on this worker's assigned partitions past what its ingress applied."""
    ingress = runtime.ingress
    if ingress is None:
        return 0
    waiting = 0
    for tp in app.consumer.assignment():
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            continue
        async with runtime.writing:  # a stored position is read once, never while a batch moves it
            applied = await runtime.executor.run(ingress.applied_offset, tp.topic, tp.partition)
        waiting += max(0, highwater - applied - 1)
    return waiting


async def watch_progress(app: faust.App, runtime: LedgerRuntime, interval: float = 5.0) -> None:
    """Every ``interval``: set or clear the liveness problem from :class:`ProgressWatchdog`."""
    while not runtime.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stopping.wait(), timeout=interval)
        if runtime.stopping.is_set() or not runtime.initialized.is_set():
            continue
        try:
            waiting = await records_waiting(app, runtime)
            _, checks = await runtime.health.report()  # a dependency away or being retried excuses the wait
        except TRANSIENT:
            continue  # the database is away: readiness says so; not a stall of the consumer
        except Exception:  # the watchdog must never take the worker down: log, look again next time
            log.warning("progress check failed", exc_info=True)
            continue
        excused = any(state != "ok" for name, state in checks.items() if name != "progress")
        idle = runtime.watchdog.stalled_for(waiting, excused)
        problem = f"no batch applied for {idle:.0f} s while {waiting} records wait" if idle else None
        if problem and not runtime.health.liveness_problem:
            log.error("consumer stalled: %s", problem, extra={"waiting": waiting})
        runtime.health.set_problem("progress", problem, fatal=True)


@dataclass(frozen=True)
class ServiceSpec:
    """What makes one event-sourced service: its topics, application and mapping."""

    name: str
    inbound_topics: tuple[str, ...]
    build_application: Callable[[Settings], LedgerApplication]
    handlers: Callable[[LedgerApplication], dict[str, Handler]]
    translate: Translate
    rejectable: tuple[type[Exception], ...] = ()
    outbound_topics: tuple[str, ...] = field(default=())
    timer_handlers: Callable[[LedgerApplication], dict[str, TimerHandler]] | None = None
    #: Background work the service runs beside its ingress (e.g. the notifier's deliveries).
    tasks: Callable[[LedgerRuntime], Iterable[Coroutine[Any, Any, None]]] | None = None


class LedgerRuntime(Service):
    """Owns one service's application, ingress, relay and health in a worker."""

    def __init__(self, spec: ServiceSpec, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.settings = settings
        self.health = Health()
        self.executor = BlockingExecutor(settings.executor_threads)
        self.publisher = Publisher(settings)
        self.stopping = asyncio.Event()
        self.writing = asyncio.Lock()  # the ingress and the deadline checks never write at once
        self.initialized = asyncio.Event()
        self.application: LedgerApplication | None = None
        self.ingress: Ingress | None = None
        self.relay: OutboxRelay | None = None
        self.watchdog = ProgressWatchdog(settings.progress_stall_after)
        self.tasks: list[asyncio.Future] = []
        self.health.set_problem("startup", "starting")

    async def on_start(self) -> None:
        registry = SchemaRegistry(resolve_schemas_dir(self.settings))
        self.application = await retry_forever(
            "database", lambda: self.executor.run(self.spec.build_application, self.settings),
            self.health, self.stopping)
        self.ingress = Ingress(app=self.application, service=self.spec.name, registry=registry,
                               handlers=self.spec.handlers(self.application),
                               rejectable=self.spec.rejectable, topic_prefix=self.settings.topic_prefix,
                               time_bounds=TimeBounds.from_settings(self.settings),
                               timer_handlers=(self.spec.timer_handlers(self.application)
                                               if self.spec.timer_handlers else {}))
        await retry_forever("broker", self.publisher.start, self.health, self.stopping)
        self.relay = OutboxRelay(self.application, self.spec.name, self.spec.translate, self.publisher,
                                 self.executor, batch=self.settings.relay_batch,
                                 poll_interval=self.settings.relay_poll_interval)
        self.add_future(self.relay.run(self.stopping))
        if self.ingress.timer_handlers:
            self.add_future(self._fire_timers())
        self.tasks = [self.add_future(task) for task in (self.spec.tasks(self) if self.spec.tasks else ())]
        self.health.add_check("database", self._ping_database)
        self.health.add_check("broker", self._ping_broker)
        self.health.set_problem("startup", None)
        self.initialized.set()
        log.info("service started", extra={"topics": list(self.spec.inbound_topics)})

    async def _ping_database(self) -> None:
        assert self.application is not None
        await self.executor.run(self.application.ingress_recorder.ping)

    async def _ping_broker(self) -> None:
        producer = self.publisher._producer
        if producer is None or not await producer.client.force_metadata_update():
            raise ConnectionError("broker metadata refresh failed")

    async def on_stop(self) -> None:
        """SIGTERM: the batch in hand finishes (no new one starts), the outbox is flushed, then close."""
        self.stopping.set()
        if self.tasks:  # they watch `stopping`: let each finish the work in hand (e.g. record what it sent)
            await asyncio.wait(self.tasks, timeout=self.settings.shutdown_grace / 4)
        async with self.writing:
            if self.relay is not None:
                drained = await self.relay.drain(timeout=self.settings.shutdown_grace / 2)
                log.info("outbox drained" if drained else "outbox left for the next start")
            await self.publisher.stop()
            self.executor.shutdown()
            if self.application is not None:
                self.application.close()

    async def _fire_timers(self) -> None:
        """Act on due deadlines every ``TIMER_INTERVAL``; one writer at a time with the ingress."""
        assert self.ingress is not None and self.relay is not None
        while not self.stopping.is_set():
            try:
                async with self.writing:
                    fired = await self.executor.run(self.ingress.fire_timers)
            except TRANSIENT:
                log.warning("deadline check failed; retrying", exc_info=True)
                fired = 0
            if fired:
                self.relay.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.settings.timer_interval)

    async def apply(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Apply one batch, retrying through database outages (never skipping)."""
        await self.initialized.wait()
        assert self.ingress is not None and self.relay is not None
        async with self.writing:
            outcome = await retry_forever("ingress", lambda: self.executor.run(self.ingress.apply, messages),
                                          self.health, self.stopping, every_error=True)
        self.watchdog.progressed()
        if outcome.notification_ids:
            self.relay.wake()
        return outcome


def build_worker(spec: ServiceSpec, settings: Settings) -> tuple[faust.App, LedgerRuntime]:
    """A Faust app running one event-sourced service."""
    app = create_faust_app(spec.name, settings)
    runtime = LedgerRuntime(spec, settings)
    app.service(runtime)
    topic = app.topic(*(settings.topic(t) for t in spec.inbound_topics),
                      key_serializer="raw", value_serializer="raw",
                      partitions=settings.topic_partitions)

    async def apply_events(stream) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within):
            messages = [raw_message(event) for event in events]
            await runtime.apply(messages)
            record_lag(app, messages)

    apply_events.__name__ = apply_events.__qualname__ = f"apply_{spec.name}_events"
    app.agent(topic, name=f"{spec.name}.apply_events")(apply_events)

    @app.task
    async def declare_topics() -> None:
        await ensure_topics(settings, (*spec.inbound_topics, *spec.outbound_topics))  # its own: ACLs allow no more

    @app.task
    async def watch_consumer_progress() -> None:
        await watch_progress(app, runtime)

    serve_asgi(app, operational_app(spec.name, runtime.health), host=settings.web_host,
               port=settings.web_port, log_level="warning")
    return app, runtime


class LedgerWorker(faust.Worker):
    """A Faust worker whose graceful shutdown is bounded by ``grace`` seconds.

    A stop that hangs (say, on a broker that went away) ends in a hard exit:
    safe, because every applied position is in the database, not in memory.
    """

    def __init__(self, app: faust.App, *, grace: float, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.grace = grace

    def _schedule_shutdown(self, signal) -> None:
        if not self._signal_stop_time:
            watchdog = threading.Timer(self.grace, self._force_exit)
            watchdog.daemon = True
            watchdog.start()
        super()._schedule_shutdown(signal)

    def _force_exit(self) -> None:
        log.error("graceful shutdown took longer than %.0f s; exiting now", self.grace)
        logging.shutdown()
        os._exit(1)


def run_worker(app: faust.App, settings: Settings, service: str) -> None:
    """Run a Faust worker in the foreground until SIGTERM / Ctrl-C."""
    logs.configure(settings.log_level, service)
    worker = LedgerWorker(app, grace=settings.shutdown_grace, loglevel=settings.log_level.upper(),
                          quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()

