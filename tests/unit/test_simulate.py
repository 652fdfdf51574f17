"""The simulator's traffic: every event valid for its topic, every journey and
exception present, and the same seed gives the same traffic."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

from services.cli.simulate import Scenario, signed
from services.kit.envelope import RawMessage, SchemaRegistry, parse
from services.kit.topics import INBOUND_TYPES
from tests.factories import TEST_KEYRING

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
START = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)


def bank_signed(record, n: int) -> RawMessage:
    """A simulated record as published: bank events signed (test keys standing in for the demo keys)."""
    [record] = signed(iter([record]), TEST_KEYRING)
    return RawMessage(record.topic, 0, n, record.key, record.value)


def traffic(seed: int, n: int = 5000) -> list:
    return list(islice(Scenario(seed=seed).events(start=START), n))


def test_the_same_seed_gives_the_same_traffic():
    first, again = traffic(7, 300), traffic(7, 300)
    strip = lambda records: [(r.topic, r.key, {k: v for k, v in json.loads(r.value).items() if k != "id"})  # noqa: E731
                             for r in records]
    assert strip(first) == strip(again)
    assert strip(traffic(8, 300)) != strip(first)


def test_every_event_is_valid_for_its_topic_and_every_journey_appears():
    registry = SchemaRegistry(SCHEMAS)
    kinds: Counter = Counter()
    for n, record in enumerate(traffic(11)):
        envelope = parse(bank_signed(record, n), registry, INBOUND_TYPES[record.topic], TEST_KEYRING)
        assert envelope.time <= START.replace(year=2027), "no event is dated far in the future"
        data = envelope.data
        if envelope.type == "refund.requested":
            kinds[f"request/{data['channel']}"] += 1
        kinds[envelope.type] += 1
        if envelope.type == "payment.recorded" and data["payer_id"] != data["beneficiary_id"]:
            kinds["third_party_payer"] += 1
        if envelope.type in {"refund.completed", "refund.failed"} and data["refund_id"].startswith("RR-"):
            kinds["bank_answer"] += 1
        if envelope.type == "visa.issued":
            kinds[f"visa/{data['visa_type']}"] += 1
            kinds["covid_visa"] += data["issued_at"] < "2022-04"
    assert kinds["payment.recorded"] > kinds["payment.acknowledged"] > 0, "some payments are never reflected"
    for kind in ("fee.charged", "request/BANK", "request/ABSHER", "refund.completed", "refund.failed",
                 "third_party_payer", "visa/DOMESTIC_WORKER", "visa/VISIT", "covid_visa", "visa.cancellation_requested",
                 "visa.cancellation_accepted", "visa.status_changed"):
        assert kinds[kind] > 0, kind
    assert kinds["request/BANK"] > kinds["bank_answer"], "some bank orders go unanswered"


def test_live_traffic_is_never_dated_in_the_future():
    registry = SchemaRegistry(SCHEMAS)
    now = datetime.now(timezone.utc)
    for n, record in enumerate(islice(Scenario(seed=3).events(clock=lambda: now), 3000)):
        envelope = parse(bank_signed(record, n), registry, INBOUND_TYPES[record.topic], TEST_KEYRING)
        times = [envelope.time, *(envelope.at(k) for k in envelope.data if k.endswith("_at"))]
        assert max(times) <= now, (envelope.type, envelope.data)


def test_every_person_has_a_contact_before_their_first_event_and_contacts_change_nothing_else():
    with_contacts = traffic(11, 3000)
    seen: set[bytes] = set()
    for record in with_contacts:
        if record.topic == "contacts":
            seen.add(record.key)
        else:
            assert record.key in seen, f"{record.topic} event for a person with no contact yet"
    without = list(islice(Scenario(seed=11, contacts=False).events(start=START), 3000))
    strip = lambda records: [(r.topic, r.key, json.loads(r.value)["data"]) for r in records  # noqa: E731
                             if r.topic != "contacts"]
    assert strip(with_contacts) == strip(without)[:len(strip(with_contacts))]
    languages = Counter(json.loads(r.value)["data"]["language"] for r in with_contacts if r.topic == "contacts")
    assert languages["ar"] > languages["en"] > 0
