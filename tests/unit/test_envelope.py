"""Inbound CloudEvents: what ``parse`` accepts, and the reason code for everything it refuses.

No I/O beyond reading the repository's ``schemas/``.
"""

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from services.kit.envelope import (
    MAX_MESSAGE_BYTES,
    RawMessage,
    Rejected,
    SchemaRegistry,
    parse,
    resolve_schemas_dir,
    write,
)
from services.kit.settings import Settings
from tests.factories import IBAN_BAD_CHECKSUM, PAID_AT, Messages, payment

PAYMENTS_TOPIC_TYPES = frozenset({"payment.recorded", "payment.acknowledged", "fee.charged"})
KIT = Path(__file__).resolve().parents[2] / "services" / "kit"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(resolve_schemas_dir(Settings()))


def envelope_of(**changes) -> dict:
    """A payment.recorded CloudEvent from Al Rajhi, as a bank sends it."""
    attributes = {"specversion": "1.0", "id": "9f1c2a4e-5b7d-4e0a-8c3f-1d2e3f4a5b6c", "source": "bank/80",
                  "type": "payment.recorded", "time": "2026-11-01T09:30:00+03:00",
                  "datacontenttype": "application/json", "data": payment("SADAD-20261101-0004512")}
    attributes.update(changes)
    return attributes


def encoded(attributes: dict) -> bytes:
    return json.dumps(attributes).encode()


def payment_with(**changes) -> dict:
    return {**payment("SADAD-20261101-0004512"), **changes}


def without(attributes: dict, name: str) -> dict:
    return {k: v for k, v in attributes.items() if k != name}


def parse_on_payments(registry: SchemaRegistry, value: bytes | None):
    return parse(Messages("payments")(value), registry, PAYMENTS_TOPIC_TYPES)


def rejection_of(registry: SchemaRegistry, value: bytes | None) -> Rejected:
    with pytest.raises(Rejected) as caught:
        parse_on_payments(registry, value)
    return caught.value


VISA_ISSUED = {"sponsor_id": "1012345672", "export_number": "1448001238", "serial_number": "3",
               "visa_type": "DOMESTIC_WORKER", "payment_id": "SADAD-20261101-0004790", "fee": 200000,
               "issued_at": "2026-11-01T11:00:00+03:00"}

#: One realistic bad message per reason code, and what its reason must name.
BAD_MESSAGES = [
    pytest.param(b"", "empty_message", ["no value"], id="empty_message"),
    pytest.param(encoded(envelope_of(comment="x" * MAX_MESSAGE_BYTES)), "oversized_payload",
                 [str(MAX_MESSAGE_BYTES)], id="oversized_payload"),
    pytest.param(json.dumps(envelope_of(subject="سداد رسوم الجوازات"), ensure_ascii=False).encode("cp1256"),
                 "invalid_utf8", ["UTF-8"], id="invalid_utf8"),
    pytest.param(encoded(envelope_of())[:-40], "malformed_json", ["not JSON", "line 1"], id="malformed_json"),
    pytest.param(encoded(without(envelope_of(), "source")), "invalid_envelope", ["source"],
                 id="invalid_envelope"),
    pytest.param(encoded(envelope_of(type="payment.reversed")), "unknown_type", ["'payment.reversed'"],
                 id="unknown_type"),
    pytest.param(encoded(envelope_of(type="visa.issued", source="musaned", data=VISA_ISSUED)), "wrong_topic",
                 ["'visa.issued'", "'payments'"], id="wrong_topic"),
    pytest.param(encoded(envelope_of(data=payment_with(amount="300.00"))), "schema_violation",
                 ["payment.recorded", "amount", "integer"], id="schema_violation"),
    pytest.param(encoded(envelope_of(time="2026-12-31T23:59:60+03:00")), "invalid_time", ["second"],
                 id="invalid_time"),
    pytest.param(encoded(envelope_of(data=payment_with(payer_iban=IBAN_BAD_CHECKSUM))), "invalid_iban",
                 ["payer_iban", IBAN_BAD_CHECKSUM, "checksum"], id="invalid_iban"),
    pytest.param(encoded(envelope_of(data=payment_with(beneficiary_id="1012345678"))), "invalid_person_id",
                 ["beneficiary_id", "national ID", "check digit"], id="invalid_person_id"),
    pytest.param(encoded(envelope_of(data=payment_with(payer_id="2012345678"))), "invalid_person_id",
                 ["payer_id", "iqama"], id="invalid_iqama"),
    pytest.param(encoded(envelope_of(dataschema="https://refund-ledger.example/schemas/events/v9/payment.recorded.json")),
                 "unknown_dataschema", ["v9", "payment.recorded"], id="unknown_dataschema"),
]


@pytest.mark.parametrize(("value", "reason_code", "named"), BAD_MESSAGES)
def test_rejects_a_bad_message_with_its_reason_code_and_a_reason_naming_the_problem(
        registry, value, reason_code, named):
    rejected = rejection_of(registry, value)
    assert rejected.reason_code == reason_code, rejected.reason
    for fragment in named:
        assert fragment in rejected.reason


def test_every_reason_code_the_parser_can_produce_has_a_bad_message_above():
    produced = set()
    for module in ("envelope.py", "iban.py", "identity.py"):
        produced |= set(re.findall(r'Rejected\(\s*"([a-z0-9_]+)"', (KIT / module).read_text(encoding="utf-8")))
    assert produced == {param.values[1] for param in BAD_MESSAGES}


def test_a_message_without_a_value_is_empty(registry):
    assert rejection_of(registry, None).reason_code == "empty_message"


def test_a_message_of_exactly_the_size_limit_is_not_oversized(registry):
    padding = MAX_MESSAGE_BYTES - len(encoded(envelope_of(comment="")))
    value = encoded(envelope_of(comment="x" * padding))
    assert len(value) == MAX_MESSAGE_BYTES
    assert parse_on_payments(registry, value).extensions == {"comment": "x" * padding}


def test_a_json_array_is_not_a_cloudevent(registry):
    rejected = rejection_of(registry, encoded([envelope_of()]))
    assert (rejected.reason_code, rejected.reason) == ("invalid_envelope", "a CloudEvent must be a JSON object")


def test_a_valid_payment_recorded_parses_with_its_attributes(registry):
    message = Messages("payments")(encoded(envelope_of()))

    envelope = parse(message, registry, PAYMENTS_TOPIC_TYPES)

    assert (envelope.type, envelope.source, envelope.id) == (
        "payment.recorded", "bank/80", "9f1c2a4e-5b7d-4e0a-8c3f-1d2e3f4a5b6c")
    assert envelope.time == PAID_AT
    assert envelope.time.utcoffset() == timedelta(0)  # aware, normalised to UTC
    assert envelope.data == payment("SADAD-20261101-0004512")
    assert envelope.at("paid_at") == PAID_AT and envelope.at("paid_at").tzinfo is not None
    assert envelope.subject is None and envelope.extensions == {}
    assert envelope.raw is message
    assert envelope.origin == {"source": "bank/80", "id": "9f1c2a4e-5b7d-4e0a-8c3f-1d2e3f4a5b6c",
                               "type": "payment.recorded"}


def test_z_and_an_explicit_offset_name_the_same_instant(registry):
    in_riyadh = parse_on_payments(registry, encoded(envelope_of(time="2026-11-01T09:30:00+03:00")))
    in_utc = parse_on_payments(registry, encoded(envelope_of(time="2026-11-01T06:30:00Z")))
    assert in_riyadh.time == in_utc.time == datetime(2026, 11, 1, 6, 30, tzinfo=timezone.utc)


def test_rejects_a_time_without_utc_offset(registry):
    rejected = rejection_of(registry, encoded(envelope_of(time="2026-11-01T09:30:00")))
    assert rejected.reason_code == "invalid_envelope"
    assert rejected.reason.startswith("CloudEvent envelope time:")


def test_rejects_a_data_time_without_utc_offset(registry):
    rejected = rejection_of(registry, encoded(envelope_of(data=payment_with(paid_at="2026-11-01T09:30:00"))))
    assert rejected.reason_code == "schema_violation"
    assert "paid_at" in rejected.reason


def test_rejects_a_data_time_that_names_no_real_instant_as_invalid_time(registry):
    # A leap second passes JSON Schema's date-time format but not datetime.fromisoformat,
    # which the handlers use through Envelope.at(); parse must refuse it, not the handler.
    value = encoded(envelope_of(data=payment_with(paid_at="2026-12-31T23:59:60+03:00")))
    rejected = rejection_of(registry, value)
    assert rejected.reason_code == "invalid_time"
    assert "paid_at" in rejected.reason


def test_rejects_a_refund_iban_with_a_bad_mod97_checksum(registry):
    data = {"request_id": "80-RFQ-20261105-000231", "beneficiary_id": "1012345672", "agency": "JAWAZAT",
            "service_code": "PASSPORT_ISSUE", "amount": 10000, "iban": IBAN_BAD_CHECKSUM, "channel": "BANK",
            "requested_at": "2026-11-05T12:00:00+03:00"}
    value = encoded(envelope_of(type="refund.requested", data=data))
    with pytest.raises(Rejected) as caught:
        parse(Messages("refund-requests")(value), registry, frozenset({"refund.requested"}))
    assert caught.value.reason_code == "invalid_iban"
    assert caught.value.reason.startswith(f"iban {IBAN_BAD_CHECKSUM!r} is not a valid IBAN")


def test_the_same_bytes_give_the_same_content_digest(registry):
    value = encoded(envelope_of())
    assert parse_on_payments(registry, value).digest == parse_on_payments(registry, value).digest


def test_the_content_digest_ignores_layout_but_not_data(registry):
    original = parse_on_payments(registry, encoded(envelope_of())).digest
    reordered = json.dumps(dict(reversed(envelope_of().items())), indent=2).encode()
    assert parse_on_payments(registry, reordered).digest == original
    other_amount = encoded(envelope_of(data=payment_with(amount=30001)))
    assert parse_on_payments(registry, other_amount).digest != original


def test_extension_attributes_are_kept_apart_from_the_core_attributes(registry):
    value = encoded(envelope_of(subject="payment/SADAD-20261101-0004512", traceparent="00-4bf92f3577b34da6-01",
                                partnerseq=7, replay=False, a2345678901234567890="twenty characters"))
    envelope = parse_on_payments(registry, value)
    assert envelope.subject == "payment/SADAD-20261101-0004512"
    assert envelope.extensions == {"traceparent": "00-4bf92f3577b34da6-01", "partnerseq": 7, "replay": False,
                                   "a2345678901234567890": "twenty characters"}


@pytest.mark.parametrize(("name", "value"), [
    pytest.param("TraceParent", "00-4bf92f3577b34da6-01", id="upper-case name"),
    pytest.param("trace_parent", "00-4bf92f3577b34da6-01", id="underscore in name"),
    pytest.param("a23456789012345678901", "x", id="name of 21 characters"),
    pytest.param("data_base64", "eyJhbW91bnQiOjF9", id="binary data"),
    pytest.param("partner", {"bank": "80"}, id="object value"),
    pytest.param("partner", None, id="null value"),
])
def test_rejects_an_extension_attribute_the_envelope_schema_does_not_allow(registry, name, value):
    rejected = rejection_of(registry, encoded(envelope_of(**{name: value})))
    assert rejected.reason_code == "invalid_envelope"
    assert name in rejected.reason


def test_rejects_data_that_is_not_json(registry):
    rejected = rejection_of(registry, encoded(envelope_of(datacontenttype="application/xml")))
    assert rejected.reason_code == "invalid_envelope"
    assert "datacontenttype" in rejected.reason


def test_an_outbound_ledger_event_written_by_the_kit_parses_back(registry):
    data = {**payment("SADAD-20261101-0004512"), "third_party_payer": False,
            "origin": {"source": "bank/80", "id": "9f1c2a4e-5b7d-4e0a-8c3f-1d2e3f4a5b6c",
                       "type": "payment.recorded"}}
    value = write(event_id="3f0c6a52-8d7e-5b1a-9c2d-0e4f6a8b1c3d:1", source="refund-ledger/payments",
                  event_type="ledger.payment.recorded", time=PAID_AT, data=data,
                  subject="payment/SADAD-20261101-0004512",
                  extensions={"recordedat": "2026-11-01T06:30:01.204000+00:00", "sequence": "42"})

    envelope = parse(RawMessage("ledger.payments", 0, 0, b"1012345672", value), registry,
                     frozenset({"ledger.payment.recorded"}))

    assert (envelope.id, envelope.source, envelope.type) == (
        "3f0c6a52-8d7e-5b1a-9c2d-0e4f6a8b1c3d:1", "refund-ledger/payments", "ledger.payment.recorded")
    assert envelope.time == PAID_AT
    assert envelope.data == data
    assert envelope.subject == "payment/SADAD-20261101-0004512"
    assert envelope.extensions == {"recordedat": "2026-11-01T06:30:01.204000+00:00", "sequence": "42"}
    assert json.loads(value)["datacontenttype"] == "application/json"


def test_written_iban_fields_are_checked_on_the_way_back(registry):
    data = {**payment("SADAD-20261101-0004512", payer_iban=IBAN_BAD_CHECKSUM), "third_party_payer": False,
            "origin": {"source": "bank/80", "id": "evt-1", "type": "payment.recorded"}}
    value = write(event_id="x:1", source="refund-ledger/payments", event_type="ledger.payment.recorded",
                  time=PAID_AT, data=data)
    with pytest.raises(Rejected) as caught:
        parse(RawMessage("ledger.payments", 0, 0, None, value), registry, frozenset({"ledger.payment.recorded"}))
    assert caught.value.reason_code == "invalid_iban"
