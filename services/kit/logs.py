"""Structured logging: one JSON object per line on stderr.

Every line carries the service, and while a message is being handled, where
it came from and what it is about: ``topic``, ``partition``, ``offset``,
``event_id``, ``event_type`` and ``case_id`` (the refund, payment, charge or
visa the event names). The ingress sets them with :func:`context` around each
message; a context variable carries them to every log call made meanwhile,
in whatever module, without passing them down. ``LOG_LEVEL`` sets the level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("refund_ledger_log_context", default=_EMPTY)

#: Data fields that name the case an event is about, most specific first.
CASE_FIELDS = ("refund_id", "request_id", "payment_id", "charge_id")


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (None values left out) to every log line emitted inside the block."""
    token = _CONTEXT.set(MappingProxyType({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}}))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current() -> Mapping[str, Any]:
    """The fields the current context adds to log lines."""
    return _CONTEXT.get()


def case_id(data: Any) -> str | None:
    """The case an event's data is about: a refund, payment or charge id, or a visa (sponsor/export/serial)."""
    if not isinstance(data, dict):
        return None
    for name in CASE_FIELDS:
        if isinstance(data.get(name), str):
            return data[name]
    if all(isinstance(data.get(k), str) for k in ("sponsor_id", "export_number", "serial_number")):
        return f"{data['sponsor_id']}/{data['export_number']}/{data['serial_number']}"
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_CONTEXT.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "info", service: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if service:
        old_factory = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            record = old_factory(*args, **kwargs)
            record.service = service
            return record

        logging.setLogRecordFactory(factory)
