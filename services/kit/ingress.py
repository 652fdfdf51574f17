"""Tracked, batched ingress: Kafka records in, domain events out, effectively once.

One batch of records is applied in one database transaction together with
the Kafka position of every partition in it and the CloudEvent ids it
applied. A record whose position is already recorded is skipped; a CloudEvent
whose ``(source, id)`` was already applied is a duplicate (same content) or a
conflict (different content, rejected). Every failure of a single record
becomes a :class:`~services.kit.rejections.Rejection` saved in the same
transaction; the rest of the batch still applies.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol
from uuid import UUID

import psycopg
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from services.kit import logs, metrics
from services.kit.envelope import DEFAULT_TIME_BOUNDS, Envelope, RawMessage, Rejected, SchemaRegistry, TimeBounds, parse
from services.kit.rejections import Rejection, encode_bytes
from services.kit.signatures import Keyring
from services.kit.store import IngressId, LedgerApplication, TimerChange, kafka_tracking, keyring_of
from services.kit.topics import INBOUND_TYPES, is_partner_topic

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


class UnitOfWork:
    """The aggregates one batch loads and changes, with a savepoint per message.

    A message that fails half-way is rolled back to its savepoint, so nothing
    it did reaches the store while the rest of the batch still does.
    """

    def __init__(self, app: LedgerApplication) -> None:
        self._app = app
        self._aggregates: dict[UUID, Aggregate] = {}
        self._absent: set[UUID] = set()  # looked up by :meth:`preload` and not stored
        self._savepoint: dict[UUID, tuple[Aggregate | None, int]] = {}
        self.timer_changes: list[TimerChange] = []
        self._timers_at_savepoint = 0

    def get(self, aggregate_id: UUID) -> Any:
        """The aggregate with this id as the batch sees it, or None."""
        aggregate = self._aggregates.get(aggregate_id)
        if aggregate is None:
            if aggregate_id in self._absent:
                return None
            aggregate = self._app.find(aggregate_id)
            if aggregate is None:
                return None
            self._aggregates[aggregate_id] = aggregate
        self._remember(aggregate_id)
        return aggregate

    def preload(self, aggregate_ids: Iterable[UUID]) -> None:
        """Load these aggregates in one query before the batch's handlers ask for them one by one;
        an id not found is known not to exist for the rest of the batch (its transaction writes it)."""
        wanted = [i for i in dict.fromkeys(aggregate_ids) if i not in self._aggregates and i not in self._absent]
        if not wanted:
            return
        found = self._app.find_many(wanted)
        self._aggregates.update(found)
        self._absent.update(i for i in wanted if i not in found)

    def add(self, aggregate: Aggregate) -> None:
        """A new aggregate created by the current message."""
        self._remember(aggregate.id)
        self._aggregates[aggregate.id] = aggregate

    def _remember(self, aggregate_id: UUID) -> None:
        if aggregate_id in self._savepoint:
            return
        current = self._aggregates.get(aggregate_id)
        if current is None:
            self._savepoint[aggregate_id] = (None, 0)
            return
        pending = current._pending_events
        current._pending_events = []
        try:
            state = copy.deepcopy(current)
        finally:
            current._pending_events = pending
        self._savepoint[aggregate_id] = (state, len(pending))

    def schedule(self, name: str, key: str, due_at: datetime) -> None:
        """Set a durable timer; the service's timer handler ``name`` runs once it is due."""
        self.timer_changes.append(TimerChange(name, key, due_at))

    def cancel(self, name: str, key: str) -> None:
        self.timer_changes.append(TimerChange(name, key, None))

    def begin(self) -> None:
        self._savepoint.clear()
        self._timers_at_savepoint = len(self.timer_changes)

    def rollback(self) -> None:
        for aggregate_id, (state, n_pending) in self._savepoint.items():
            if state is None:
                self._aggregates.pop(aggregate_id, None)
                continue
            state._pending_events = self._aggregates[aggregate_id]._pending_events[:n_pending]
            self._aggregates[aggregate_id] = state
        self._savepoint.clear()
        del self.timer_changes[self._timers_at_savepoint:]

    @property
    def aggregates(self) -> list[Aggregate]:
        return list(self._aggregates.values())


class Handler(Protocol):
    """What a service provides: apply one validated event to its domain."""

    def __call__(self, uow: UnitOfWork, envelope: Envelope) -> None: ...


@dataclass(frozen=True)
class Reading:
    """A handler with the ids of the aggregates it reads for an event, so that the ingress loads
    a whole batch's aggregates in one query (:meth:`UnitOfWork.preload`). The ids are a hint that
    saves round trips: one the handler asks for without declaring it is still found."""

    handle: Handler
    reads: Callable[[Envelope], Iterable[UUID]]

    def __call__(self, uow: UnitOfWork, envelope: Envelope) -> None:
        self.handle(uow, envelope)


class TimerHandler(Protocol):
    """What a service does when one of its timers is due (``now`` is the firing time)."""

    def __call__(self, uow: UnitOfWork, key: str, due_at: datetime, now: datetime) -> None: ...


@dataclass
class BatchOutcome:
    """What one batch did, for metrics, logs and tests."""

    consumed: int = 0
    applied: int = 0
    skipped_offsets: int = 0
    duplicates: int = 0
    passed_over: int = 0
    rejected: Tally = field(default_factory=Tally)
    notification_ids: Sequence[int] = ()


@dataclass
class _BatchWork:
    """What the messages of one batch produced, saved together."""

    rejections: list[Rejection] = field(default_factory=list)
    ingress_ids: list[IngressId] = field(default_factory=list)
    lags: list[tuple[str, datetime]] = field(default_factory=list)
    applied_types: Tally = field(default_factory=Tally)


@dataclass
class Ingress:
    """Applies batches of raw Kafka records to one service's application."""

    app: LedgerApplication
    service: str
    registry: SchemaRegistry
    handlers: dict[str, Handler]
    rejectable: tuple[type[Exception], ...] = ()
    topic_prefix: str = ""
    timer_handlers: dict[str, TimerHandler] = field(default_factory=dict)
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    keyring: Keyring | None = None  # bank signing keys; None = the application's (BANK_SIGNING_KEYS)
    time_bounds: TimeBounds = DEFAULT_TIME_BOUNDS  # partner event times (EVENT_TIME_MAX_FUTURE / _EARLIEST)
    _positions: dict[tuple[str, int], int] = field(default_factory=dict, init=False)

    @property
    def accepted_types(self) -> frozenset[str]:
        return frozenset(self.handlers)

    def _accepted_on(self, topic: str) -> tuple[frozenset[str], bool]:
        """The types accepted on ``topic``, and whether it is a followed ledger topic."""
        logical = topic[len(self.topic_prefix):] if topic.startswith(self.topic_prefix) else topic
        if is_partner_topic(logical):
            return INBOUND_TYPES[logical] & self.accepted_types, False
        return self.registry.types, True

    def apply(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Apply one batch (blocking; run it in the kit's executor)."""
        started = time.perf_counter()
        for attempt in range(1, 4):
            try:
                outcome = self._apply_once(messages)
                break
            except IntegrityError:
                # Another writer got there first (e.g. after a rebalance): forget
                # what we cached and try again; already-applied records are skipped.
                metrics.INGRESS_RETRIES.labels("conflict").inc()
                log.warning("batch conflicted with stored state; retrying", extra={"attempt": attempt})
                self.forget_cached_state()
        else:
            raise RuntimeError("batch kept conflicting with stored state after 3 attempts")
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(messages))
        return outcome

    def fire_timers(self, limit: int = 500) -> int:
        """Run the handlers of due timers in one transaction; each fires once.

        A handler's domain error is logged and its timer dropped (a timer never
        blocks the others); an outage or a conflicting writer leaves every timer
        in place for the next round.
        """
        now = self.clock()
        due = self.app.ingress_recorder.due_timers(now, limit, names=list(self.timer_handlers))
        if not due:
            return 0
        uow = UnitOfWork(self.app)
        for timer in due:
            uow.cancel(timer.name, timer.key)  # before the handler: it may set the timer again
            uow.begin()
            try:
                self.timer_handlers[timer.name](uow, timer.key, timer.due_at, now)
            except TRANSIENT_ERRORS:
                raise
            except Exception:  # a bug in one timer must not stop the rest: log it, drop it
                uow.rollback()
                log.exception("timer handler failed", extra={"timer": timer.name, "key": timer.key})
        try:
            recordings = self.app.save(*uow.aggregates, timers=uow.timer_changes)
        except IntegrityError:
            self.forget_cached_state()
            return 0
        for timer in due:
            metrics.TIMERS_FIRED.labels(timer.name).inc()
        return len(recordings)

    def forget_cached_state(self) -> None:
        self._positions.clear()
        cache = self.app.repository.cache
        if cache is not None:
            cache.clear()

    def applied_offset(self, topic: str, partition: int) -> int:
        """The last Kafka offset applied on topic:partition (-1: none), read once, then kept."""
        key = (topic, partition)
        if key not in self._positions:
            stored = self.app.tracked_offset(topic, partition)
            self._positions[key] = -1 if stored is None else stored
        return self._positions[key]

    def _apply_once(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        outcome = BatchOutcome(consumed=len(messages))
        fresh = self._unseen_offsets(messages, outcome)
        if not fresh:
            return outcome
        parsed = [self._parse(message) for message in fresh]
        seen = self.app.ingress_recorder.seen_digests(
            (p.source, p.id) for p in parsed if isinstance(p, Envelope))
        uow, work = UnitOfWork(self.app), _BatchWork()
        uow.preload(self._reads(parsed, seen))
        for message, item in zip(fresh, parsed, strict=True):
            envelope = item if isinstance(item, Envelope) else None
            with logs.context(topic=message.topic, partition=message.partition, offset=message.offset,
                              event_id=envelope.id if envelope else None,
                              event_type=envelope.type if envelope else None,
                              case_id=logs.case_id(envelope.data) if envelope else None):
                if item is None:
                    outcome.passed_over += 1
                elif isinstance(item, Rejected):
                    work.rejections.append(self._rejection(message, item, None))
                elif (item.source, item.id) in seen:
                    self._duplicate(message, item, seen[(item.source, item.id)], work, outcome)
                elif self._apply_one(uow, message, item, work):
                    seen[(item.source, item.id)] = item.digest

        last: dict[tuple[str, int], int] = {}
        for message in fresh:
            where = (message.topic, message.partition)
            last[where] = max(message.offset, last.get(where, -1))
        recordings = self.app.save(
            *uow.aggregates, *work.rejections,
            trackings=[kafka_tracking(t, p, o) for (t, p), o in last.items()],
            ingress_ids=work.ingress_ids,
            timers=uow.timer_changes,
        )
        self._positions.update(last)
        self._count(work, outcome)
        outcome.notification_ids = [r.notification.id for r in recordings]
        if work.rejections:
            log.info("rejected %d of %d records", len(work.rejections), len(fresh),
                     extra={"reasons": dict(outcome.rejected)})
        return outcome

    def _reads(self, parsed: Sequence[Envelope | Rejected | None], seen: dict[tuple[str, str], str]) -> list[UUID]:
        """The aggregates the batch's handlers declare they read (:class:`Reading`)."""
        ids: list[UUID] = []
        for item in parsed:
            if not isinstance(item, Envelope) or (item.source, item.id) in seen:
                continue
            handler = self.handlers.get(item.type)
            if isinstance(handler, Reading):
                try:
                    ids.extend(handler.reads(item))
                except (LookupError, TypeError, ValueError):
                    continue  # data the handler will reject with its own reason: nothing to load
        return ids

    def _unseen_offsets(self, messages: Sequence[RawMessage], outcome: BatchOutcome) -> list[RawMessage]:
        """The messages past the stored Kafka position (redeliveries are skipped)."""
        fresh = []
        for message in messages:
            metrics.EVENTS_CONSUMED.labels(message.topic).inc()
            if message.offset <= self.applied_offset(message.topic, message.partition):
                outcome.skipped_offsets += 1
                metrics.EVENTS_DUPLICATE.labels(message.topic, "offset").inc()
            else:
                fresh.append(message)
        return fresh

    def _parse(self, message: RawMessage) -> Envelope | Rejected | None:
        """The validated envelope, the rejection, or None for a ledger event of no use here."""
        accepted, following = self._accepted_on(message.topic)
        try:
            envelope = parse(message, self.registry, accepted,
                             keyring_of(self.app) if self.keyring is None else self.keyring,
                             time_bounds=None if following else self.time_bounds, now=self.clock())
        except Rejected as rejected:
            return rejected
        if following and envelope.type not in self.handlers:
            metrics.EVENTS_PASSED_OVER.labels(message.topic, envelope.type).inc()
            return None
        return envelope

    def _duplicate(self, message: RawMessage, item: Envelope, digest: str, work: _BatchWork,
                   outcome: BatchOutcome) -> None:
        """An event id applied before: the same content is a duplicate, other content a conflict."""
        if digest == item.digest:
            outcome.duplicates += 1
            metrics.EVENTS_DUPLICATE.labels(message.topic, "event_id").inc()
            return
        work.rejections.append(self._rejection(message, Rejected(
            "duplicate_id_conflict",
            f"CloudEvent id {item.id!r} from {item.source!r} was already applied with different content"),
            item))

    def _apply_one(self, uow: UnitOfWork, message: RawMessage, item: Envelope, work: _BatchWork) -> bool:
        """Run the handler inside a savepoint; True if applied. Any failure but an
        outage becomes a rejection."""
        uow.begin()
        try:
            self.handlers[item.type](uow, item)
        except Rejected as rejected:
            uow.rollback()
            work.rejections.append(self._rejection(message, rejected, item))
            return False
        except self.rejectable as error:
            uow.rollback()
            reason_code = getattr(error, "reason_code", "business_rule")
            reason = str(error) or (type(error).__doc__ or reason_code).strip()
            work.rejections.append(self._rejection(message, Rejected(reason_code, reason), item))
            return False
        except TRANSIENT_ERRORS:
            raise
        except Exception as error:  # a bug must not stall the partition: reject, log, count
            uow.rollback()
            log.exception("handler failed", extra={"type": item.type, "event_id": item.id})
            work.rejections.append(self._rejection(
                message, Rejected("internal_error", f"{type(error).__name__} while applying"), item))
            return False
        work.ingress_ids.append(IngressId(item.source, item.id, item.digest, message.topic,
                                          message.partition, message.offset))
        work.applied_types[(message.topic, item.type)] += 1
        work.lags.append((message.topic, item.time))
        return True

    def _count(self, work: _BatchWork, outcome: BatchOutcome) -> None:
        now = self.clock()
        for (topic, event_type), count in work.applied_types.items():
            metrics.EVENTS_APPLIED.labels(topic, event_type).inc(count)
        for topic, happened in work.lags:
            metrics.EVENT_LAG.labels(topic).observe(max(0.0, (now - happened).total_seconds()))
        for rejection in work.rejections:
            metrics.EVENTS_REJECTED.labels(rejection.topic, rejection.reason_code).inc()
            outcome.rejected[rejection.reason_code] += 1
        outcome.applied = len(work.ingress_ids)

    def _rejection(self, message: RawMessage, rejected: Rejected, envelope: Envelope | None) -> Rejection:
        # inside the message's log context: the line names topic, partition, offset, event id and case
        log.info("event rejected: %s", rejected.reason_code,
                 extra={"reason_code": rejected.reason_code, "reason": rejected.reason[:500]})
        key, key_encoding = encode_bytes(message.key)
        value, value_encoding = encode_bytes(message.value)
        return Rejection(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            reason_code=rejected.reason_code,
            reason=rejected.reason,
            original={"topic": message.topic, "partition": message.partition, "offset": message.offset,
                      "key": key, "key_encoding": key_encoding,
                      "value": value or "", "value_encoding": value_encoding},
            event_id=envelope.id if envelope else None,
            event_source=envelope.source if envelope else None,
            event_type=envelope.type if envelope else None,
            event_dataschema=envelope.dataschema if envelope else None,
            rejected_by=self.service,
            rejected_at=self.clock(),
        )
