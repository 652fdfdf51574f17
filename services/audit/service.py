"""Audit service wiring: ledger topics -> projections (asyncpg); the API and
the operational routes served from the same Faust worker on AUDIT_API_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import faust
from faust.contrib.asgi import serve_asgi

from services.audit.app import build_api
from services.audit.projections import FOLLOWED_TOPICS, Projection, create_schema, read_model_gauges
from services.kit import envelope
from services.kit.auth import check_secret
from services.kit.kafka import Publisher, Record, ensure_topics
from services.kit.pii import FieldCipher
from services.kit.rules import load_rules
from services.kit.runtime import create_faust_app, raw_message, record_lag, retry_forever
from services.kit.settings import Settings
from services.kit.web import Health, add_operational_routes

log = logging.getLogger(__name__)

GAUGE_INTERVAL = 15.0  # seconds between refreshes of the read-model gauges (refunds, exceptions)
#: PostgreSQL away, as asyncpg reports it: a lost connection, and the server shutting down or starting
#: up (57P0x: CannotConnectNowError, AdminShutdownError, which are no PostgresConnectionError). The
#: projection retries every error; these are the expected ones, logged without a traceback.
DATABASE_AWAY = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                 asyncpg.exceptions.OperatorInterventionError)


class AuditRuntime:
    """The asyncpg pool and projection of one audit worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fields = FieldCipher.for_settings(settings)  # CIPHER_KEY: IBANs sealed in the read model
        self.pool: asyncpg.Pool | None = None
        self.publisher = Publisher(settings)
        self.projection: Projection | None = None
        self.ready = asyncio.Event()
        self.health = Health()
        self.health.set_problem("startup", "starting")

    async def start(self) -> None:
        delay = 0.2
        while self.pool is None:
            try:
                pool = await asyncpg.create_pool(self.settings.database_url, min_size=2, max_size=10,
                                                 command_timeout=30)
                await create_schema(pool)
                self.pool = pool
            except (OSError, asyncpg.PostgresError) as error:
                self.health.set_problem("database", f"connecting: {error}"[:300])
                log.warning("database not reachable; retrying", extra={"error": str(error)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self.health.set_problem("database", None)
        self.projection = Projection(self.pool, self.settings.topic_prefix, self.fields)
        self.health.add_check("database", self._ping_database)
        self.health.add_check("broker", self._ping_broker)
        self.health.set_problem("startup", None)
        self.ready.set()

    async def stop(self) -> None:
        await self.publisher.stop()
        if self.pool is not None:
            await self.pool.close()

    async def decide(self, event_type: str, data: dict[str, Any]) -> str:
        """Send a staff decision on a queued refund to the refunds service; its CloudEvent id."""
        if not self.publisher.started:
            await self.publisher.start()
        event_id = str(uuid.uuid4())
        source = "jawazat" if data["queue"] == "JAWAZAT_QUEUE" else "mofa"
        value = envelope.write(event_id=event_id, source=source, event_type=event_type,
                               time=datetime.now(timezone.utc), data=data, subject=f"refund/{data['refund_id']}")
        # keyed by refund: every decision on one refund stays in order
        await self.publisher.publish([Record("refund-decisions", data["refund_id"].encode(), value)])
        return event_id

    async def _ping_database(self) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def _ping_broker(self) -> None:
        first = self.settings.kafka_bootstrap_servers.split(",")[0].strip()
        parts = urlsplit(f"//{first}")
        _, writer = await asyncio.open_connection(parts.hostname, parts.port or 9092)
        writer.close()
        await writer.wait_closed()

    async def apply(self, messages) -> int:
        """Project one batch, retrying until it applies (never skipping it)."""
        await self.ready.wait()
        assert self.projection is not None
        projection = self.projection
        return await retry_forever("projection", lambda: projection.apply(messages), self.health,
                                   transient=DATABASE_AWAY, every_error=True)


def build_worker(settings: Settings) -> tuple[faust.App, AuditRuntime]:
    settings.require("database_url", "audit_api_secret")
    check_secret(settings.audit_api_secret)
    app = create_faust_app("audit", settings.with_(web_port=settings.audit_api_port,
                                                   web_host=settings.audit_api_host))
    runtime = AuditRuntime(settings)
    topic = app.topic(*(settings.topic(t) for t in FOLLOWED_TOPICS), key_serializer="raw",
                      value_serializer="raw", partitions=settings.topic_partitions)

    @app.agent(topic, name="audit.project_ledger_events")
    async def project_ledger_events(stream) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within):
            messages = [raw_message(event) for event in events]
            await runtime.apply(messages)
            record_lag(app, messages)

    @app.task
    async def start_read_model() -> None:
        await ensure_topics(settings, (*FOLLOWED_TOPICS, "refund-decisions"))
        await runtime.start()

    @app.timer(interval=GAUGE_INTERVAL)
    async def refresh_gauges() -> None:
        if runtime.pool is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await read_model_gauges(runtime.pool)

    api = build_api(lambda: runtime.pool, settings.audit_api_secret, load_rules(settings.rules_file),
                    runtime.decide, lambda target: add_operational_routes(target, runtime.health),
                    liaisons_file=settings.liaisons_file, fields=runtime.fields)
    serve_asgi(app, api, host=settings.audit_api_host, port=settings.audit_api_port, log_level="warning")
    return app, runtime
