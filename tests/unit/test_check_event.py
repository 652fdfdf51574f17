"""``refund-ledger check-event``: per-line verdicts, and the topic table it judges by.

No I/O beyond reading the repository's ``schemas/``; the services' handler
tables are read from their specs, never started.
"""

import io
import json
from pathlib import Path

import pytest
import yaml

from services.cli.check import TOPIC_TYPES, check_lines
from services.kit.catalogue import Catalogue
from services.kit.envelope import RawMessage, SchemaRegistry, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.settings import Settings
from services.kit.signatures import requires_signature, sign
from services.kit.topics import is_partner_topic
from services.notifier.application import handled_types
from services.notifier.service import SPEC as NOTIFIER
from services.payments.service import SPEC as PAYMENTS
from services.refunds.service import SPEC as REFUNDS
from services.visas.service import SPEC as VISAS
from tests.factories import IBAN_BAD_CHECKSUM, TEST_KEYRING, acknowledgement, payment

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
INBOUND_SERVICES = (PAYMENTS, VISAS, REFUNDS, NOTIFIER)


def handlers_of(spec) -> dict:
    """The types a service handles; the notifier's come from its catalogue (data), not from code."""
    if spec is NOTIFIER:
        return dict.fromkeys(handled_types(Catalogue.load()), lambda uow, envelope: None)
    return spec.handlers(None)


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(resolve_schemas_dir(Settings()))


def line(event_type: str, data: dict, event_id: str, *, time: str = "2026-11-01T09:30:00+03:00",
         source: str = "bank/80") -> str:
    """One partner event; a bank event is signed with the bank's test key, as a bank would sign it."""
    attributes = {"specversion": "1.0", "id": event_id, "source": source, "type": event_type,
                  "time": time, "data": data}
    if requires_signature(event_type, data):
        attributes = sign(attributes, TEST_KEYRING)
    return json.dumps(attributes)


def example(event_type: str) -> dict:
    """The valid example each inbound schema carries."""
    return json.loads((SCHEMAS / "events" / f"{event_type}.json").read_text(encoding="utf-8"))["examples"][0]


def test_gives_accepted_or_the_reason_code_per_line_number(registry):
    partner_file = io.BytesIO("\n".join([
        line("payment.recorded", payment("SADAD-1"), "evt-1"),                                  # 1
        line("payment.recorded", {**payment("SADAD-2"), "amount": 0}, "evt-2"),                 # 2
        "",                                                                                     # 3 blank
        line("payment.recorded", payment("SADAD-3", payer_iban=IBAN_BAD_CHECKSUM), "evt-3"),    # 4
        '{"specversion": "1.0", "id": "evt-5", ',                                               # 5
        line("payment.acknowledged", acknowledgement("SADAD-1"), "evt-6", source="nic") + "\r",  # 6 CRLF
        line("payment.refunded", payment("SADAD-1"), "evt-7"),                                  # 7
        line("visa.issued", example("visa.issued"), "evt-8", source="musaned"),                 # 8
        line("payment.recorded", payment("SADAD-9"), "evt-9", time="2026-11-01T09:30:00"),      # 9
    ]).encode() + b"\n\xff\xfe{}\n")                                                            # 10

    results = check_lines(partner_file, registry, "payments")

    verdicts = {number: verdict for number, verdict, _ in results}
    assert verdicts == {1: "accepted", 2: "schema_violation", 4: "invalid_iban", 5: "malformed_json",
                        6: "accepted", 7: "unknown_type", 8: "wrong_topic", 9: "invalid_envelope",
                        10: "invalid_utf8"}
    reasons = {number: reason for number, _, reason in results}
    assert reasons[1] == "payment.recorded evt-1"
    assert reasons[6] == "payment.acknowledged evt-6"
    assert "amount" in reasons[2]
    assert "payer_iban" in reasons[4]
    assert "'payments'" in reasons[8]


def test_reads_text_lines_as_well_as_bytes(registry):
    results = check_lines([line("payment.recorded", payment("SADAD-1"), "evt-1") + "\n", "  \n"], registry, None)
    assert results == [(1, "accepted", "payment.recorded evt-1")]


def test_without_a_topic_every_inbound_type_is_accepted(registry):
    inbound = sorted(set().union(*TOPIC_TYPES.values()))
    lines = [line(t, example(t), f"evt-{n}") for n, t in enumerate(inbound)]
    assert [verdict for _, verdict, _ in check_lines(lines, registry, None, TEST_KEYRING)] == \
        ["accepted"] * len(inbound)


def test_without_a_topic_a_ledger_event_is_still_refused(registry):
    ledger_event = line("ledger.payment.acknowledged", {
        "payment_id": "SADAD-1", "beneficiary_id": "1012345672", "acknowledged_at": "2026-11-01T09:35:00+03:00",
        "origin": {"source": "nic", "id": "evt-6", "type": "payment.acknowledged"}}, "evt-1")
    [(_, verdict, _)] = check_lines([ledger_event], registry, None)
    assert verdict == "wrong_topic"


def asyncapi_inbound_types() -> dict[str, frozenset[str]]:
    """Per channel the ledger consumes (AsyncAPI 2 ``publish``), the CloudEvent types it carries."""
    document = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text(encoding="utf-8"))
    messages = document["components"]["messages"]
    inbound = {}
    for channel, item in document["channels"].items():
        if "publish" not in item:
            continue
        message = item["publish"]["message"]
        refs = [m["$ref"] for m in message.get("oneOf", [message])]
        inbound[channel] = frozenset(messages[ref.removeprefix("#/components/messages/")]["name"] for ref in refs)
    return inbound


def test_topic_types_match_the_asyncapi_document_topic_by_topic():
    assert asyncapi_inbound_types() == TOPIC_TYPES


def test_topic_types_match_what_the_consuming_services_handle():
    consumed_by = {}
    for spec in INBOUND_SERVICES:
        partner_topics = [t for t in spec.inbound_topics if is_partner_topic(t)]
        for topic in partner_topics:
            assert topic not in consumed_by, f"{topic} consumed by {consumed_by.get(topic)} and {spec.name}"
            consumed_by[topic] = spec.name
        handled = frozenset(t for t in handlers_of(spec) if not t.startswith("ledger."))
        listed = frozenset().union(*(TOPIC_TYPES[topic] for topic in partner_topics))
        assert listed == handled, spec.name
    assert set(consumed_by) == set(TOPIC_TYPES)


def test_every_inbound_type_has_a_data_schema(registry):
    assert set().union(*TOPIC_TYPES.values()) <= registry.types


def test_judges_each_topic_as_the_service_consuming_it_does(registry):
    # check-event promises to validate "exactly as the services would": for every
    # inbound type sent on every inbound topic, its verdict must be the one the
    # consuming service's ingress reaches for the same record.
    inbound = sorted(set().union(*TOPIC_TYPES.values()))
    disagreements = []
    for spec in INBOUND_SERVICES:
        ingress = Ingress(app=None, service=spec.name, registry=registry, handlers=handlers_of(spec),
                          keyring=TEST_KEYRING)
        for topic in (t for t in spec.inbound_topics if is_partner_topic(t)):
            for offset, event_type in enumerate(inbound):
                value = line(event_type, example(event_type), f"evt-{offset}")
                [(_, checked, _)] = check_lines([value], registry, topic, TEST_KEYRING)
                served = ingress._parse(RawMessage(topic, 0, offset, b"1012345672", value.encode()))
                in_service = getattr(served, "reason_code", "accepted")
                if checked != in_service:
                    disagreements.append(f"{event_type} on {topic}: check-event {checked}, {spec.name} {in_service}")
    assert disagreements == []


def test_checks_bank_signatures_as_the_services_do(registry):
    signed = line("refund.failed", example("refund.failed"), "evt-1")
    unsigned = json.dumps({**json.loads(signed), "signature": None, "signaturekeyid": None})
    unsigned = json.dumps({k: v for k, v in json.loads(unsigned).items() if v is not None})
    forged = json.dumps({**json.loads(signed), "source": "bank/20"})
    verdicts = [v for _, v, _ in check_lines([signed, unsigned, forged], registry, "bank-returns", TEST_KEYRING)]
    assert verdicts == ["accepted", "unsigned_event", "wrong_signer"]
    [(_, without_keys, _)] = check_lines([signed], registry, "bank-returns")
    assert without_keys == "no_signing_keys"
