"""The first journey end to end: a payment on Kafka -> payments service ->
ledger.payments -> audit read model -> audit API, all real processes."""

from __future__ import annotations

import json
import uuid

import pytest

from services.kit.envelope import RawMessage, SchemaRegistry, parse, resolve_schemas_dir
from services.kit.identity import with_check_digit
from services.kit.settings import Settings
from tests.e2e.harness import produce, read_topic, wait_for
from tests.factories import acknowledgement, charge, cloudevent, payment

pytestmark = pytest.mark.e2e


def unique_person() -> str:
    return with_check_digit("1" + str(uuid.uuid4().int)[:8])


def test_a_payment_sent_to_kafka_is_visible_in_the_audit_api(stack):
    person, payment_id = unique_person(), f"PAY-{uuid.uuid4().hex[:10]}"
    key = person.encode()
    produce(stack.bootstrap, [
        (stack.topic("payments"), key, cloudevent("payment.recorded", payment(payment_id, beneficiary_id=person))),
        (stack.topic("payments"), key, cloudevent("payment.acknowledged", acknowledgement(payment_id), source="nic")),
        (stack.topic("payments"), key, cloudevent("fee.charged", charge(f"C-{payment_id}", beneficiary_id=person),
                                                   source="jawazat")),
    ])
    token = stack.token()

    def case():
        status, body = stack.audit.get(f"/api/v1/payments/{payment_id}", token)
        return body if status == 200 and body["acknowledged_at"] else None

    body = wait_for(case, 30, "the payment in the audit API")
    assert body["paid_at"] == "2026-11-01T09:30:00+03:00"
    assert (body["channel"], body["amount"], body["currency"]) == ("SADAD_ONLINE", 30000, "SAR")
    assert body["bank"] == {"code": "80", "name": "Al Rajhi Bank"}
    assert [(e["type"], e["source"]) for e in body["timeline"]] == [
        ("ledger.payment.recorded", "bank/80"), ("ledger.balance.credited", "bank/80"),
        ("ledger.payment.acknowledged", "nic")]
    assert all(e["recorded_at"] and e["time"] for e in body["timeline"])

    def balances():
        status, body = stack.audit.get(f"/api/v1/beneficiaries/{person}/balances", token)
        return body if status == 200 and body["balances"] and body["balances"][0]["charged"] else None

    [line] = wait_for(balances, 30, "the charged balance")["balances"]
    assert (line["credited"], line["charged"], line["available"]) == (30000, 20000, 10000)


def test_the_same_payment_sent_again_is_counted_once(stack):
    person = unique_person()
    key, topic = person.encode(), stack.topic("payments")
    same_id = cloudevent("payment.recorded", payment("DUP-" + person, beneficiary_id=person, amount=5000))
    new_id = cloudevent("payment.recorded", payment("DUP-" + person, beneficiary_id=person, amount=5000))
    sentinel = cloudevent("payment.recorded", payment("SEN-" + person, beneficiary_id=person, amount=1))
    produce(stack.bootstrap, [(topic, key, same_id), (topic, key, same_id), (topic, key, new_id),
                              (topic, key, same_id), (topic, key, sentinel)])
    token = stack.token()

    def credited():  # the sentinel comes last on the same partition: once it shows, all were applied
        status, body = stack.audit.get(f"/api/v1/beneficiaries/{person}/balances", token)
        lines = body["balances"] if status == 200 else []
        return lines[0]["credited"] if lines and lines[0]["credited"] % 2 else None

    assert wait_for(credited, 30, "the sentinel payment") == 5001


def test_bad_input_lands_on_rejections_and_processing_continues(stack):
    person = unique_person()
    key, topic = person.encode(), stack.topic("payments")
    marker = uuid.uuid4().hex
    bad = [
        b'{"specversion": "1.0", "id": "' + marker.encode() + b'", ',
        cloudevent("payment.recorded", {**payment("BAD-" + marker, beneficiary_id=person), "amount": "lots"},
                   event_id=f"schema-{marker}"),
        cloudevent("payment.refunded.by.magic", {"x": 1}, event_id=f"type-{marker}"),
    ]
    good_id = "GOOD-" + marker
    positions = produce(stack.bootstrap, [(topic, key, value) for value in bad]
                        + [(topic, key, cloudevent("payment.recorded", payment(good_id, beneficiary_id=person)))])
    token = stack.token()
    wait_for(lambda: stack.audit.get(f"/api/v1/payments/{good_id}", token)[0] == 200, 30,
             "the valid payment sent after the bad ones")

    bad_offsets = {positions[i] for i in range(3)}

    def ours():
        found = {}
        for record in read_topic(stack.bootstrap, stack.topic("rejections")):
            data = json.loads(record.value)["data"]
            where = (data["original"]["partition"], data["original"]["offset"])
            if data["original"]["topic"] == topic and where in bad_offsets:
                found[where] = data
        return found if len(found) == 3 else None

    found = wait_for(ours, 30, "three rejections")
    codes = [found[positions[i]]["reason_code"] for i in range(3)]
    assert codes == ["malformed_json", "schema_violation", "unknown_type"]
    assert all(d["reason"] and d["rejected_by"] == "payments" for d in found.values())
    assert "amount" in found[positions[1]]["reason"]
    assert stack.payments.metric("refund_ledger_events_rejected_total", reason_code="malformed_json") >= 1


def test_every_envelope_published_validates_against_the_schemas(stack):
    registry = SchemaRegistry(resolve_schemas_dir(Settings()))
    published = [*read_topic(stack.bootstrap, stack.topic("ledger.payments")),
                 *read_topic(stack.bootstrap, stack.topic("rejections"))]
    assert published, "earlier tests published ledger events"
    types = set()
    for record in published:
        message = RawMessage(record.topic, record.partition, record.offset, record.key, record.value)
        envelope = parse(message, registry, registry.types)
        types.add(envelope.type)
    assert {"ledger.payment.recorded", "ledger.balance.credited", "event.rejected"} <= types
