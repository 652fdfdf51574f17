"""Versions of an inbound event type, told apart by the CloudEvents ``dataschema`` attribute.

The ``type`` of an event never changes with its version: topics, handlers,
idempotency keys and audit timelines keep working. A sender of a newer
version says so in ``dataschema``; without it (or with the v1 URI) the event
is version 1:

* v1: ``https://refund-ledger.example/schemas/events/<type>.json`` or absent
* vN: ``https://refund-ledger.example/schemas/events/vN/<type>.json``

``data`` is validated against ``schemas/events/vN/<type>.json``, then
upcast to the shape the services handle (the v1 field names; fields new in
the version ride along). See ``schemas/README.md``, "Versions of an event".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.kit.errors import Rejected

SCHEMA_BASE = "https://refund-ledger.example/schemas/events/"
_VERSIONED = re.compile(r"^v([2-9]|[1-9][0-9]+)/(.+)\.json$")


def schema_version(dataschema: Any, event_type: str) -> str:
    """``v1``, ``v2``, … for the ``dataschema`` an event names; Rejected for a schema of another type."""
    if dataschema is None or dataschema == f"{SCHEMA_BASE}{event_type}.json":
        return "v1"
    if isinstance(dataschema, str) and dataschema.startswith(SCHEMA_BASE):
        match = _VERSIONED.match(dataschema[len(SCHEMA_BASE):])
        if match and match.group(2) == event_type:
            return f"v{match.group(1)}"
    raise Rejected("unknown_dataschema", f"dataschema {dataschema!r} is no version of {event_type}; use "
                                         f"{SCHEMA_BASE}{event_type}.json or {SCHEMA_BASE}vN/{event_type}.json")


def _payment_recorded_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 renamed ``channel`` to ``payment_channel`` and added the optional ``terminal_id``."""
    upcast = {("channel" if name == "payment_channel" else name): value for name, value in data.items()}
    return upcast


#: (type, version) -> the function that turns that version's data into the shape the handlers read.
UPCASTERS: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("payment.recorded", "v2"): _payment_recorded_v2,
}


def upcast(event_type: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    if version == "v1":
        return data
    return UPCASTERS[(event_type, version)](data)
