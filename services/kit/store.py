"""The event store of a service: ``eventsourcing`` on PostgreSQL, plus the kit's
bookkeeping written in the same transaction as the domain events.

* ``trackings``: the Kafka position (topic:partition -> offset) of the batch,
  using the library's single-row tracking table, so a redelivered message is
  recognised and skipped.
* ``ingress_ids``: the CloudEvent ``(source, id)`` of every applied event with
  a digest of its content, the idempotency key the public contract promises.
* ``outbox_positions``: how far the relay has published the notification log.
* ``timers``: deadlines a service must act on (an SLA, a payment that must be
  acknowledged), set and cancelled atomically with the events that cause them,
  so they survive restarts and fire once.
* ``event_hashes`` / ``chain_digests``: the hash chain of every aggregate's
  events and periodic digests of all chains (tamper evidence, ``chain.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.persistence import Notification, ProcessRecorder, StoredEvent, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from services.kit.chain import GENESIS, chains_digest, event_hash, state_digest
from services.kit.rules import Rules, load_rules
from services.kit.settings import Settings
from services.kit.signatures import NO_KEYS, Keyring

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngressId:
    """The idempotency key of one applied inbound CloudEvent."""

    source: str
    event_id: str
    digest: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class TimerChange:
    """Set (``due_at``) or cancel (``due_at=None``) the timer ``name``/``key``."""

    name: str
    key: str
    due_at: datetime | None


@dataclass(frozen=True)
class DueTimer:
    name: str
    key: str
    due_at: datetime


class IngressRecorder(PostgresProcessRecorder):
    """A process recorder that also records several Kafka positions and the
    CloudEvent ids of a batch atomically with the batch's domain events."""

    def __init__(self, datastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = Identifier(self.datastore.schema)
        self._ingress_table = SQL("{0}.ingress_events").format(schema)
        self._outbox_table = SQL("{0}.outbox_positions").format(schema)
        self._timers_table = SQL("{0}.timers").format(schema)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "name text NOT NULL, key text NOT NULL, due_at timestamptz NOT NULL, "
                "PRIMARY KEY (name, key))"
            ).format(self._timers_table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS timers_due ON {0} (due_at)").format(self._timers_table))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "source text NOT NULL, event_id text NOT NULL, digest text NOT NULL, "
                "topic text NOT NULL, kafka_partition int NOT NULL, kafka_offset bigint NOT NULL, "
                "recorded_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (source, event_id))"
            ).format(self._ingress_table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "name text PRIMARY KEY, position bigint NOT NULL, "
                "updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._outbox_table)
        )
        self._hashes_table = SQL("{0}.event_hashes").format(schema)
        self._digests_table = SQL("{0}.chain_digests").format(schema)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
                "state_sha256 text NOT NULL, hash text NOT NULL, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(self._hashes_table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "id bigserial PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now(), "
                "up_to_notification bigint NOT NULL, chains bigint NOT NULL, digest text NOT NULL)"
            ).format(self._digests_table)
        )
        self.digest_interval = 300.0  # CHAIN_DIGEST_INTERVAL; set by LedgerApplication
        self._next_digest = 0.0

    def _insert_events(
        self,
        curs: psycopg.Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        for tracking in kwargs.get("trackings", ()):
            self._insert_tracking(curs, tracking)
        ingress_ids: Sequence[IngressId] = kwargs.get("ingress_ids", ())
        if ingress_ids:
            curs.executemany(
                SQL(
                    "INSERT INTO {0} (source, event_id, digest, topic, kafka_partition, kafka_offset) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(self._ingress_table),
                [(i.source, i.event_id, i.digest, i.topic, i.partition, i.offset) for i in ingress_ids],
            )
        self._change_timers(curs, kwargs.get("timers", ()))
        super()._insert_events(curs, stored_events, **kwargs)

    def _insert_stored_events(
        self,
        curs: psycopg.Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        """The events (under the library's table lock), then their chain hashes and, when due, a digest."""
        super()._insert_stored_events(curs, stored_events, **kwargs)
        # Own cursors: ``curs`` still holds the notification ids the library reads, and in pipeline mode
        # a cursor that ran a write must not be asked for a later query's rows.
        with curs.connection.cursor() as own:
            self._chain(own, stored_events)
        if time.monotonic() >= self._next_digest:
            with curs.connection.cursor() as own:
                self._record_digest(own)
            self._next_digest = time.monotonic() + self.digest_interval

    def _chain(self, curs: psycopg.Cursor[DictRow], stored_events: Sequence[StoredEvent]) -> None:
        events = sorted(((UUID(str(e.originator_id)), e) for e in stored_events),
                        key=lambda item: (item[0].bytes, item[1].originator_version))
        first: dict[UUID, int] = {}
        for originator_id, event in events:
            first.setdefault(originator_id, event.originator_version)
        wanted = [(i, v - 1) for i, v in first.items() if v > 1]
        previous: dict[UUID, str] = {}
        if wanted:
            ids, versions = zip(*wanted, strict=True)
            curs.execute(
                SQL("SELECT h.originator_id, h.hash FROM {0} h "
                    "JOIN unnest(%s::uuid[], %s::bigint[]) AS k(originator_id, originator_version) "
                    "USING (originator_id, originator_version)").format(self._hashes_table),
                (list(ids), list(versions)))
            previous = {row["originator_id"]: row["hash"] for row in curs.fetchall()}
        rows = []
        for originator_id, event in events:
            # A missing predecessor (a store older than the chain) starts from GENESIS; verify reports it.
            link = previous.get(originator_id, GENESIS)
            digest = event_hash(link, originator_id, event.originator_version, event.topic, event.state)
            rows.append((originator_id, event.originator_version, state_digest(event.state), digest))
            previous[originator_id] = digest
        curs.execute(
            SQL("INSERT INTO {0} (originator_id, originator_version, state_sha256, hash) "
                "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::text[])").format(self._hashes_table),
            [list(column) for column in zip(*rows, strict=True)])

    def _record_digest(self, curs: psycopg.Cursor[DictRow]) -> None:
        curs.execute(SQL("SELECT max(notification_id) AS up_to FROM {0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)))
        up_to = curs.fetchone()["up_to"] or 0
        chains, digest = chains_digest(chain_heads(curs, self.datastore.schema, self.events_table_name, up_to))
        curs.execute(SQL("INSERT INTO {0} (up_to_notification, chains, digest) VALUES (%s, %s, %s)")
                     .format(self._digests_table), (up_to, chains, digest))
        log.info("chain digest recorded", extra={"schema": self.datastore.schema, "up_to_notification": up_to,
                                                 "chains": chains, "digest": digest})

    def _change_timers(self, curs: psycopg.Cursor[DictRow], changes: Sequence[TimerChange]) -> None:
        final = {(c.name, c.key): c.due_at for c in changes}  # the last change of a key wins
        setting = [(name, key, due) for (name, key), due in final.items() if due is not None]
        cancelling = [(name, key) for (name, key), due in final.items() if due is None]
        if setting:
            curs.executemany(
                SQL("INSERT INTO {0} (name, key, due_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name, key) DO UPDATE SET due_at = EXCLUDED.due_at").format(self._timers_table),
                setting)
        if cancelling:
            curs.executemany(SQL("DELETE FROM {0} WHERE name = %s AND key = %s").format(self._timers_table),
                             cancelling)

    def due_timers(self, now: datetime, limit: int, names: Sequence[str] | None = None) -> list[DueTimer]:
        """Timers due at ``now`` (only those called one of ``names``, if given), oldest first."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT name, key, due_at FROM {0} WHERE due_at <= %s AND (%s::text[] IS NULL OR name = ANY(%s)) "
                    "ORDER BY due_at LIMIT %s")
                .format(self._timers_table), (now, names, names, limit))
            return [DueTimer(r["name"], r["key"], r["due_at"]) for r in curs.fetchall()]

    def timers(self) -> list[DueTimer]:
        """Every pending timer (tests and operators)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT name, key, due_at FROM {0} ORDER BY due_at").format(self._timers_table))
            return [DueTimer(r["name"], r["key"], r["due_at"]) for r in curs.fetchall()]

    def select_events_of(self, originator_ids: Collection[UUID]) -> dict[UUID, list[StoredEvent]]:
        """The stored events of every aggregate named, in version order, in one query (an aggregate
        with no events is absent from the answer)."""
        if not originator_ids:
            return {}
        found: dict[UUID, list[StoredEvent]] = {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL("SELECT originator_id, originator_version, topic, state FROM {0}.{1} "
                    "WHERE originator_id = ANY(%s::uuid[]) ORDER BY originator_id, originator_version")
                .format(Identifier(self.datastore.schema), Identifier(self.events_table_name)),
                (list(originator_ids),), prepare=True)
            for row in curs.fetchall():
                originator_id = UUID(str(row["originator_id"]))
                found.setdefault(originator_id, []).append(StoredEvent(
                    originator_id=originator_id, originator_version=row["originator_version"],
                    topic=row["topic"], state=bytes(row["state"])))
        return found

    def seen_digests(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The content digest recorded for each already-applied (source, id)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        sources, ids = zip(*keys, strict=True)
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT i.source, i.event_id, i.digest FROM {0} i "
                    "JOIN unnest(%s::text[], %s::text[]) AS k(source, event_id) "
                    "USING (source, event_id)"
                ).format(self._ingress_table),
                (list(sources), list(ids)),
            )
            return {(r["source"], r["event_id"]): r["digest"] for r in curs.fetchall()}

    def outbox_position(self, name: str) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT position FROM {0} WHERE name = %s").format(self._outbox_table), (name,))
            row = curs.fetchone()
            return int(row["position"]) if row else 0

    def set_outbox_position(self, name: str, position: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {0} (name, position) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now() "
                    "WHERE {0}.position < EXCLUDED.position"
                ).format(self._outbox_table),
                (name, position),
            )

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT 1")


#: Chain heads read per query by :func:`chain_heads`: memory stays bounded however many aggregates there are.
HEADS_PAGE = 10_000


def chain_heads(curs: psycopg.Cursor[DictRow], schema: str, events_table: str, up_to: int,
                page: int = HEADS_PAGE) -> Iterator[tuple[UUID, int, str]]:
    """Each aggregate's newest stored event up to notification ``up_to``, with its recorded hash, in
    the order of the aggregate ids, read ``page`` aggregates at a time (a digest of a million chains
    once held them all in memory: hundreds of MB at every digest)."""
    after: UUID | None = None
    while True:
        curs.execute(
            SQL("SELECT DISTINCT ON (e.originator_id) e.originator_id, e.originator_version, h.hash "
                "FROM {0}.{1} e LEFT JOIN {0}.event_hashes h USING (originator_id, originator_version) "
                "WHERE e.notification_id <= %s AND (%s::uuid IS NULL OR e.originator_id > %s::uuid) "
                "ORDER BY e.originator_id, e.originator_version DESC LIMIT %s")
            .format(Identifier(schema), Identifier(events_table)), (up_to, after, after, page))
        rows = curs.fetchall()
        for row in rows:
            yield UUID(str(row["originator_id"])), row["originator_version"], row["hash"] or ""
        if len(rows) < page:
            return
        after = UUID(str(rows[-1]["originator_id"]))


def ensure_schema(database_url: str, schema: str) -> None:
    """Create the service's own PostgreSQL schema if it does not exist."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(schema)))


class LedgerApplication(Application):
    """Base of every service's application: an event store with tracking.

    Subclasses set ``name`` (also the PostgreSQL schema and the ledger topic
    suffix) and add their commands and queries.
    """

    def __init__(self, settings: Settings, schema: str | None = None) -> None:
        schema = schema or self.name.lower()
        ensure_schema(settings.database_url, schema)
        env = settings.postgres_env(schema)
        env["PROCESS_RECORDER_TOPIC"] = f"{IngressRecorder.__module__}:{IngressRecorder.__qualname__}"
        super().__init__(env)
        self.rules = load_rules(settings.rules_file)
        self.keyring = Keyring.parse(settings.bank_signing_keys)
        self.ingress_recorder.digest_interval = settings.chain_digest_interval

    def find(self, aggregate_id: UUID) -> Any:
        """The aggregate with this id, or None."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def find_many(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, Any]:
        """The aggregates with these ids that exist, each as :meth:`find` would give it, with one
        query for all those not in the aggregate cache (a batch's lookups, most of them for
        aggregates that do not exist yet, cost one round trip instead of one each)."""
        repository = self.repository
        wanted = list(dict.fromkeys(aggregate_ids))
        if repository.snapshot_store is not None:  # snapshots: the repository knows how to combine them
            return {i: a for i in wanted if (a := self.find(i)) is not None}
        found: dict[UUID, Any] = {}
        missing = []
        for aggregate_id in wanted:
            try:
                cached = repository.cache.get(aggregate_id) if repository.cache is not None else None
            except KeyError:
                cached = None
            if cached is None:
                missing.append(aggregate_id)
            else:  # copied, as the repository does: a rolled-back change must not reach the cache
                found[aggregate_id] = deepcopy(cached) if repository.deepcopy_from_cache else cached
        for aggregate_id, stored in self.ingress_recorder.select_events_of(missing).items():
            # not put in the cache: the batch may still change it; a save caches what it stored
            aggregate = project_aggregate(None, map(self.mapper.to_domain_event, stored))
            if aggregate is not None:
                found[aggregate_id] = aggregate
        return found

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    @property
    def ingress_recorder(self) -> IngressRecorder:
        assert isinstance(self.recorder, IngressRecorder)
        return self.recorder

    def notifications_after(self, position: int, limit: int) -> Sequence[Notification]:
        """Up to ``limit`` stored events after notification ``position``, oldest first."""
        return self.recorder.select_notifications(start=position + 1, limit=limit)

    def tracked_offset(self, topic: str, partition: int) -> int | None:
        """The last Kafka offset applied for topic:partition, or None."""
        return self.ingress_recorder.max_tracking_id(tracking_name(topic, partition))


def rules_of(app: LedgerApplication | None) -> Rules:
    """The application's rules; the packaged rules for handler tables built without one (checks, tests)."""
    return app.rules if isinstance(app, LedgerApplication) else load_rules()


def keyring_of(app: LedgerApplication | None) -> Keyring:
    """The bank signing keys the application verifies with; none for handler tables built without one."""
    return app.keyring if isinstance(app, LedgerApplication) else NO_KEYS


def tracking_name(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def kafka_tracking(topic: str, partition: int, offset: int) -> Tracking:
    return Tracking(application_name=tracking_name(topic, partition), notification_id=offset)
