"""Schema evolution: payment.recorded v2 (dataschema) is accepted next to v1, and a stored
version 1 Rejection.Recorded event still loads with the version 2 code (eventsourcing upcasting)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from services.kit.envelope import RawMessage, SchemaRegistry, parse
from services.kit.errors import Rejected
from services.kit.rejections import Rejection
from services.kit.versions import SCHEMA_BASE, UPCASTERS, schema_version
from tests.factories import payment

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
V2 = f"{SCHEMA_BASE}v2/payment.recorded.json"
PAYMENTS = frozenset({"payment.recorded"})


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(SCHEMAS)


def as_v2(data: dict, **extra) -> dict:
    return {("payment_channel" if k == "channel" else k): v for k, v in data.items()} | extra


def value(data: dict, dataschema: str | None = None, event_id: str = "evt-1") -> bytes:
    attributes = {"specversion": "1.0", "id": event_id, "source": "bank/80", "type": "payment.recorded",
                  "time": "2026-11-01T09:30:00+03:00", "data": data}
    if dataschema:
        attributes["dataschema"] = dataschema
    return json.dumps(attributes).encode()


def parsed(registry, raw: bytes):
    return parse(RawMessage("payments", 0, 0, b"1012345672", raw), registry, PAYMENTS)


def test_v2_is_accepted_and_handed_to_the_services_in_the_v1_shape(registry):
    envelope = parsed(registry, value(as_v2(payment(), terminal_id="ATM-80-0412"), V2))
    assert envelope.type == "payment.recorded" and envelope.dataschema == V2
    assert envelope.data["channel"] == "SADAD_ONLINE" and "payment_channel" not in envelope.data
    assert envelope.data["terminal_id"] == "ATM-80-0412"


def test_v1_is_still_accepted_with_or_without_its_dataschema(registry):
    for dataschema in (None, f"{SCHEMA_BASE}payment.recorded.json"):
        assert parsed(registry, value(payment(), dataschema)).data["channel"] == "SADAD_ONLINE"


def test_the_same_payment_in_v1_and_v2_has_the_same_content(registry):
    v1, v2 = parsed(registry, value(payment())), parsed(registry, value(as_v2(payment()), V2))
    assert v1.data == v2.data and v1.digest == v2.digest  # a resend in v2 is a duplicate, not a conflict


@pytest.mark.parametrize(("data", "dataschema", "reason_code"), [
    (payment(), V2, "schema_violation"),                         # v1 field names under the v2 schema
    (as_v2(payment()), None, "schema_violation"),                # v2 field names without saying so
    (as_v2(payment(), terminal_id=""), V2, "schema_violation"),
    (payment(), f"{SCHEMA_BASE}v3/payment.recorded.json", "unknown_dataschema"),
    (payment(), f"{SCHEMA_BASE}v2/fee.charged.json", "unknown_dataschema"),
    (payment(), "https://elsewhere.example/payment.json", "unknown_dataschema"),
])
def test_a_version_mismatch_is_rejected_precisely(registry, data, dataschema, reason_code):
    with pytest.raises(Rejected) as caught:
        parsed(registry, value(data, dataschema))
    assert caught.value.reason_code == reason_code


def test_every_versioned_schema_has_an_upcaster_and_a_valid_example(registry):
    versioned = sorted((SCHEMAS / "events").glob("v*/*.json"))
    assert versioned, "at least payment.recorded v2"
    for path in versioned:
        event_type, version = path.name.removesuffix(".json"), path.parent.name
        assert (event_type, version) in UPCASTERS
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["$id"] == f"{SCHEMA_BASE}{version}/{event_type}.json"
        assert schema_version(document["$id"], event_type) == version
        registry.validate_data(event_type, document["examples"][0], version)


# Stored events: Rejection.Recorded is at class_version 2 (event_dataschema); version 1 events stay readable.

def test_a_stored_version_1_rejection_loads_with_the_version_2_code():
    app = Application()  # the library's in-memory store: the same mapper and upcasting as PostgreSQL
    rejection_id = uuid4()
    v1_state = {  # what the version 1 code stored: no class_version, no event_dataschema
        "originator_topic": "services.kit.rejections:Rejection",
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-11-01T06:30:00+00:00"},
        "topic": "payments", "partition": 0, "offset": 7, "reason_code": "schema_violation",
        "reason": "payment.recorded data amount: must be integer", "original": {"topic": "payments"},
        "event_id": "evt-7", "event_source": "bank/80", "event_type": "payment.recorded",
        "rejected_by": "payments",
        "rejected_at": {"_type_": "datetime_iso", "_data_": "2026-11-01T06:30:00+00:00"},
    }
    app.recorder.insert_events([StoredEvent(rejection_id, 1, "services.kit.rejections:Rejection.Recorded",
                                            json.dumps(v1_state).encode())])
    loaded = app.repository.get(rejection_id)
    assert isinstance(loaded, Rejection)
    assert (loaded.reason_code, loaded.event_id, loaded.event_dataschema) == ("schema_violation", "evt-7", None)


def test_a_version_2_rejection_is_stored_with_its_class_version():
    app = Application()
    rejection = Rejection(topic="payments", partition=0, offset=8, reason_code="schema_violation", reason="x",
                          original={}, event_id="evt-8", event_source="bank/80", event_type="payment.recorded",
                          rejected_by="payments", rejected_at=datetime(2026, 11, 1, tzinfo=timezone.utc),
                          event_dataschema=V2)
    app.save(rejection)
    [stored] = app.recorder.select_events(rejection.id)
    assert json.loads(stored.state)["class_version"] == 2
    assert app.repository.get(rejection.id).event_dataschema == V2
