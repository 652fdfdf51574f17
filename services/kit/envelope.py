"""CloudEvents in and out: parse and validate inbound messages, write outbound ones.

Inbound messages are CloudEvents 1.0 in structured JSON mode. ``parse`` turns
raw Kafka bytes into an :class:`Envelope` or raises :class:`Rejected` with a
machine-readable reason code. The envelope is checked against
``schemas/cloudevent.json`` and its ``data`` against ``schemas/events/<type>.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastjsonschema
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from services.kit.errors import Rejected
from services.kit.iban import check_saudi_iban
from services.kit.identity import PERSON_FIELDS, check_person_id
from services.kit.signatures import NO_KEYS, Keyring, verify
from services.kit.versions import schema_version, upcast

__all__ = ["Envelope", "RawMessage", "Rejected", "SchemaRegistry", "TimeBounds", "parse", "write"]

MAX_MESSAGE_BYTES = 256 * 1024
MONEY_FIELDS = frozenset({"amount", "fee"})
CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True)
class RawMessage:
    """One Kafka record as consumed, before any parsing."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Envelope:
    """An inbound CloudEvent that passed envelope and schema validation."""

    id: str
    source: str
    type: str
    time: datetime
    data: dict[str, Any]
    subject: str | None
    extensions: dict[str, Any]
    raw: RawMessage
    digest: str
    dataschema: str | None = None  # the sender's schema version (services.kit.versions); data is upcast to v1

    @property
    def origin(self) -> dict[str, str]:
        """Where a ledger fact came from: this inbound CloudEvent."""
        return {"source": self.source, "id": self.id, "type": self.type}

    def at(self, field_name: str) -> datetime:
        """A timezone-aware time field of ``data`` (schema guarantees the offset)."""
        return parse_time(self.data[field_name])


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 time with offset into an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return parsed.astimezone(timezone.utc)


def content_digest(event_type: str, data: Any) -> str:
    canonical = json.dumps([event_type, data], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _first_error(exc: fastjsonschema.JsonSchemaValueException) -> str:
    path = exc.name.replace("data.", "", 1) if exc.name != "data" else "(root)"
    return f"{path}: {exc.message.replace(exc.name + ' ', '', 1)}"


class SchemaRegistry:
    """Compiled JSON Schemas for the envelope and every event type in ``schemas/``."""

    def __init__(self, schemas_dir: Path) -> None:
        self.schemas_dir = schemas_dir
        self._envelope = fastjsonschema.compile(self._load(schemas_dir / "cloudevent.json"))
        self.documents: dict[str, dict[str, Any]] = {}
        self._validators: dict[str, Callable[[Any], Any]] = {}
        for path in sorted((schemas_dir / "events").glob("*.json")):
            event_type = path.name.removesuffix(".json")
            document = self._load(path)
            self.documents[event_type] = document
            self._validators[event_type] = fastjsonschema.compile(document)
        self._versions: dict[tuple[str, str], Callable[[Any], Any]] = {}  # events/vN/<type>.json
        for path in sorted((schemas_dir / "events").glob("v*/*.json")):
            self._versions[(path.name.removesuffix(".json"), path.parent.name)] = fastjsonschema.compile(
                self._load(path))

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text(encoding="utf-8"))

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._validators)

    def validate_envelope(self, attributes: Any) -> None:
        try:
            self._envelope(attributes)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise Rejected("invalid_envelope", f"CloudEvent envelope {_first_error(exc)}") from None

    def validate_data(self, event_type: str, data: Any, version: str = "v1") -> None:
        validator = self._validators.get(event_type) if version == "v1" else self._versions.get((event_type, version))
        if validator is None and version != "v1":
            raise Rejected("unknown_dataschema", f"no {version} schema for event type {event_type!r}")
        if validator is None:
            raise Rejected("unknown_type", f"no schema for event type {event_type!r}")
        try:
            validator(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            label = event_type if version == "v1" else f"{event_type} {version}"
            raise Rejected("schema_violation", f"{label} data {_first_error(exc)}") from None


def resolve_schemas_dir(settings) -> Path:
    """``SCHEMAS_DIR`` if set, else the repository's ``schemas/``."""
    if settings.schemas_dir:
        return Path(settings.schemas_dir)
    return Path(__file__).resolve().parents[2] / "schemas"


_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_TIME_SHAPE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$")


def _check_instants(attributes: dict[str, Any]) -> None:
    """A time written in the right shape that names no instant (30 February, 24:30, a leap second)
    is ``invalid_time``, whichever check would otherwise see it first."""
    data = attributes.get("data")
    fields = [("time", attributes.get("time"))] + (
        [(n, v) for n, v in data.items() if n.endswith("_at")] if isinstance(data, dict) else [])
    for name, value in fields:
        if isinstance(value, str) and _TIME_SHAPE.match(value):
            try:
                parse_time(value)
            except ValueError as exc:
                raise Rejected("invalid_time", f"{name}: {exc}") from None


def _decode(raw: RawMessage) -> dict[str, Any]:
    """The message value as a JSON object, or the precise reason it is not one."""
    value = raw.value
    if value is None or len(value) == 0:
        raise Rejected("empty_message", "the message has no value")
    if len(value) > MAX_MESSAGE_BYTES:
        raise Rejected("oversized_payload", f"message is {len(value)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("invalid_utf8", f"message is not UTF-8 (byte {exc.start})") from None
    try:
        attributes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected("malformed_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise Rejected("malformed_json", f"not JSON this ledger can read: {str(exc)[:120]}") from None
    except RecursionError:
        raise Rejected("malformed_json", "not JSON this ledger can read: nested too deeply") from None
    if b"\\u" in value and _LONE_SURROGATE.search(text):
        try:  # a \uD800-\uDFFF escape outside a pair decodes to no character: it cannot be stored or signed
            json.dumps(attributes, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("invalid_utf8", "the message escapes a lone UTF-16 surrogate (\\uD800-\\uDFFF), "
                                           "which is no character") from None
    if not isinstance(attributes, dict):
        raise Rejected("invalid_envelope", "a CloudEvent must be a JSON object")
    return attributes


@dataclass(frozen=True)
class TimeBounds:
    """When an inbound fact may have happened (README "Times"): not more than
    ``max_future`` after it was received (a sender's clock is wrong, nothing has
    happened in the future) and not before ``earliest`` (no ledger fact is that
    old: a zeroed or mistyped year). Applies to ``time`` and every ``*_at`` field
    of partner events; outside the bounds -> ``invalid_time``."""

    max_future: timedelta = timedelta(minutes=5)
    earliest: datetime = datetime(2000, 1, 1, tzinfo=timezone.utc)

    @classmethod
    def from_settings(cls, settings) -> TimeBounds:
        """EVENT_TIME_MAX_FUTURE (seconds) and EVENT_TIME_EARLIEST (RFC 3339)."""
        return cls(timedelta(seconds=settings.event_time_max_future), parse_time(settings.event_time_earliest))

    def check(self, event_time: datetime, data: dict[str, Any], now: datetime) -> None:
        times = [("time", event_time)] + [(name, parse_time(value)) for name, value in data.items()
                                          if name.endswith("_at") and isinstance(value, str)]
        for name, value in times:
            if value > now + self.max_future:
                raise Rejected("invalid_time", f"{name} {value.isoformat()} is in the future: more than "
                                               f"{self.max_future.total_seconds():.0f} s after it was received "
                                               f"({now.isoformat(timespec='seconds')})")
            if value < self.earliest:
                raise Rejected("invalid_time", f"{name} {value.isoformat()} is before "
                                               f"{self.earliest.isoformat()}: no ledger fact is that old")


DEFAULT_TIME_BOUNDS = TimeBounds()


def _check_values(data: dict[str, Any]) -> None:
    """What JSON Schema cannot say: IBAN checksums, ID check digits, times that name a real instant."""
    for name, value in data.items():
        if name in MONEY_FIELDS and isinstance(value, float):  # JSON Schema's "integer" lets 300.0 through
            raise Rejected("schema_violation", f"{name}: must be a whole number of halalas, not {value!r}")
        if name.endswith("iban"):
            data[name] = check_saudi_iban(value, name)
        elif name in PERSON_FIELDS:
            check_person_id(value, name)
        elif name.endswith("_at") and isinstance(value, str):
            try:
                parse_time(value)
            except ValueError as exc:  # e.g. a leap second: matches the pattern, names no instant
                raise Rejected("invalid_time", f"{name}: {exc}") from None


def parse(raw: RawMessage, registry: SchemaRegistry, accepted_types: frozenset[str],
          keyring: Keyring = NO_KEYS, time_bounds: TimeBounds | None = DEFAULT_TIME_BOUNDS,
          now: datetime | None = None) -> Envelope:
    """Turn a raw Kafka record into a validated :class:`Envelope`.

    Times must lie within ``time_bounds`` of ``now`` (default: the clock); None
    skips that check (the ledger's own events, e.g. a deadline ahead).

    Bank events must carry their bank's signature, checked against ``keyring``
    (``services.kit.signatures``); with no keys every bank event is rejected.
    """
    attributes = _decode(raw)
    _check_instants(attributes)
    registry.validate_envelope(attributes)
    event_type = attributes["type"]
    if event_type not in registry.types:
        raise Rejected("unknown_type", f"unknown event type {event_type!r}")
    if event_type not in accepted_types:
        raise Rejected("wrong_topic", f"event type {event_type!r} is not accepted on topic {raw.topic!r}")
    data = attributes["data"]
    version = schema_version(attributes.get("dataschema"), event_type)
    registry.validate_data(event_type, data, version)
    as_sent = {**attributes, "data": dict(data)}  # _check_values normalises data in place; a bank signed it as sent
    data = upcast(event_type, version, data)
    _check_values(data)
    verify(as_sent, keyring)
    try:
        time = parse_time(attributes["time"])
    except ValueError as exc:
        raise Rejected("invalid_time", f"time: {exc}") from None
    if time_bounds is not None:
        time_bounds.check(time, data, now or datetime.now(timezone.utc))
    core = {"specversion", "id", "source", "type", "time", "data", "subject", "datacontenttype", "dataschema"}
    return Envelope(
        id=attributes["id"],
        source=attributes["source"],
        type=event_type,
        time=time,
        data=data,
        subject=attributes.get("subject"),
        extensions={k: v for k, v in attributes.items() if k not in core},
        raw=raw,
        digest=content_digest(event_type, data),
        dataschema=attributes.get("dataschema"),
    )


_FORMAT = JSONFormat()


def write(*, event_id: str, source: str, event_type: str, time: datetime, data: dict[str, Any],
          subject: str | None = None, extensions: dict[str, Any] | None = None) -> bytes:
    """Serialise an outbound CloudEvent in structured JSON mode (CloudEvents SDK)."""
    attributes: dict[str, Any] = {
        "id": event_id,
        "source": source,
        "type": event_type,
        "specversion": "1.0",
        "time": time.astimezone(timezone.utc),
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    attributes.update(extensions or {})
    return _FORMAT.write(CloudEvent(attributes, data))
