"""Bank event signatures: the canonical form, rotation, and the precise reason for each refusal."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from services.kit.envelope import RawMessage, SchemaRegistry, parse, resolve_schemas_dir
from services.kit.errors import Rejected
from services.kit.settings import Settings, SettingsError
from services.kit.signatures import (
    NO_KEYS,
    Keyring,
    KeyringError,
    canonical_bytes,
    demo_keys,
    requires_signature,
    sign,
    sign_bytes,
    verify,
)
from tests.factories import (
    IBAN_OTHER,
    TEST_BANK_KEYS,
    TEST_KEYRING,
    bank_completion,
    bank_failure,
    cloudevent,
    refund_request,
)

KEYS = {"80": {"80-old": "o" * 32, "80-new": "n" * 32}, "20": {"20-only": "r" * 32}}
KEYRING = Keyring.parse(KEYS)
BANK_TYPES = frozenset({"refund.completed", "refund.failed", "refund.requested"})


def completed(**changes) -> dict:
    return {"specversion": "1.0", "id": "BR-80-000123", "source": "bank/80", "type": "refund.completed",
            "time": "2026-11-03T10:00:00+03:00",
            "data": {"refund_id": "RR-1", "bank_reference": "BR-1", "amount": 10000,
                     "iban": "SA0380000000608010167519", "completed_at": "2026-11-03T10:00:00+03:00"},
            **changes}


def reason(attributes: dict, keyring: Keyring = KEYRING) -> str:
    try:
        verify(attributes, keyring)
    except Rejected as rejected:
        return rejected.reason_code
    return "accepted"


def test_canonical_form_is_sorted_compact_utf8_of_five_attributes():
    attributes = completed(subject="ignored", extra="ignored", data={"b": 1, "a": "مرحبا"})
    assert canonical_bytes(attributes) == (
        '{"data":{"a":"مرحبا","b":1},"id":"BR-80-000123","source":"bank/80",'
        '"time":"2026-11-03T10:00:00+03:00","type":"refund.completed"}').encode()


def test_a_partner_reproduces_the_signature_from_the_documented_recipe():
    signed = sign(completed(), KEYRING)
    recipe = json.dumps({k: signed[k] for k in ("id", "source", "type", "time", "data")},
                        sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    mac = hmac.new(b"n" * 32, recipe, hashlib.sha256).hexdigest()
    assert (signed["signaturekeyid"], signed["signature"]) == ("80-new", f"v1={mac}")


def test_senders_use_the_newest_key_and_both_rotation_keys_verify():
    new = sign(completed(), KEYRING)
    assert new["signaturekeyid"] == "80-new"
    old = {**completed(), "signaturekeyid": "80-old",
           "signature": "v1=" + hmac.new(b"o" * 32, canonical_bytes(completed()), hashlib.sha256).hexdigest()}
    assert reason(new) == reason(old) == "accepted"
    retired = Keyring.parse({"80": {"80-new": "n" * 32}, "20": KEYS["20"]})
    assert reason(old, retired) == "wrong_signer"


@pytest.mark.parametrize(("attributes", "expected"), [
    (completed(), "unsigned_event"),
    ({**completed(), "signature": "v1=" + "0" * 64}, "unsigned_event"),  # no key id
    ({**sign(completed(), KEYRING), "signature": "v1=" + "0" * 64}, "bad_signature"),
    ({**sign(completed(), KEYRING), "signature": "sha256=abc"}, "bad_signature"),
    ({**sign(completed(), KEYRING), "id": "BR-80-000124"}, "bad_signature"),  # replayed under another id
    ({**sign(completed(), KEYRING), "time": "2026-11-03T10:00:01+03:00"}, "bad_signature"),
    ({**sign(completed(), KEYRING), "signaturekeyid": "80-nope"}, "wrong_signer"),
    ({**sign(completed(), KEYRING), "signaturekeyid": "20-only"}, "wrong_signer"),  # another bank's key id
    ({**sign(completed(), KEYRING), "source": "absher"}, "wrong_signer"),
], ids=["unsigned", "no-key-id", "wrong-mac", "malformed", "other-id", "other-time", "unknown-key-id",
        "other-banks-key-id", "not-a-bank"])
def test_refuses_with_a_precise_reason(attributes, expected):
    assert reason(attributes) == expected


def test_changed_data_breaks_the_signature():
    signed = sign(completed(), KEYRING)
    signed["data"] = {**signed["data"], "amount": 10001}
    assert reason(signed) == "bad_signature"


def test_an_event_signed_with_another_banks_key_names_that_bank():
    mac = hmac.new(b"r" * 32, canonical_bytes(completed()), hashlib.sha256).hexdigest()  # bank 20's key
    forged = {**completed(), "signaturekeyid": "80-new", "signature": f"v1={mac}"}  # claims to be bank 80
    with pytest.raises(Rejected, match="bank 20's key") as caught:
        verify(forged, KEYRING)
    assert caught.value.reason_code == "wrong_signer"


def test_the_account_bank_must_be_the_signing_bank():
    request = {**completed(), "type": "refund.requested", "source": "bank/20",
               "data": refund_request(iban="SA0380000000608010167519")}
    with pytest.raises(Rejected, match="account's bank is 80") as caught:
        verify(sign(request, KEYRING), KEYRING)
    assert caught.value.reason_code == "wrong_signer"


def test_a_service_with_no_keys_accepts_no_bank_event():
    assert reason(sign(completed(), KEYRING), NO_KEYS) == "no_signing_keys"


def test_only_bank_money_events_need_a_signature():
    assert requires_signature("refund.completed", {}) and requires_signature("refund.failed", {})
    assert requires_signature("refund.requested", {"channel": "BANK"})
    assert not requires_signature("refund.requested", {"channel": "ABSHER"})
    assert not requires_signature("payment.recorded", {"channel": "BANK"})
    assert reason({**completed(), "type": "payment.recorded"}, NO_KEYS) == "accepted"


@pytest.mark.parametrize(("raw", "fault"), [
    ([], "JSON object"),
    ({"8": {"k": "x" * 32}}, "two digits"),
    ({"80": {}}, "at least one key"),
    ({"80": {"k": "short"}}, "at least 32 bytes"),
    ({"80": {"bad id!": "x" * 32}}, "key id"),
    ({"80": {"k": "x" * 32}, "20": {"k": "y" * 32}}, "listed for banks 80 and 20"),
])
def test_a_malformed_keyring_is_refused_naming_the_fault(raw, fault):
    with pytest.raises(KeyringError, match=fault):
        Keyring.parse(raw)


def test_settings_read_keys_from_json_or_a_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS))
    assert Settings.from_env({"BANK_SIGNING_KEYS_FILE": str(path)}).bank_signing_keys == KEYS
    assert Settings.from_env({"BANK_SIGNING_KEYS": json.dumps(KEYS)}).bank_signing_keys == KEYS
    assert "n" * 32 not in repr(Settings.from_env({"BANK_SIGNING_KEYS": json.dumps(KEYS)}))
    assert hash(Settings.from_env({"BANK_SIGNING_KEYS": json.dumps(KEYS)})) is not None, "settings stay hashable"
    with pytest.raises(SettingsError, match="BANK_SIGNING_KEYS"):
        Settings.from_env({"BANK_SIGNING_KEYS": "{not json"})
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"BANK_SIGNING_KEYS": json.dumps(KEYS), "BANK_SIGNING_KEYS_FILE": str(path)})


def test_demo_keys_are_fresh_two_per_bank_and_valid():
    first, second = demo_keys(("80", "20")), demo_keys(("80", "20"))
    assert first != second and all(len(keys) == 2 for keys in first.values())
    assert Keyring.parse(first).newest("80")[0] == "demo-80-b"


def test_sign_bytes_signs_bank_events_only():
    unsigned = json.dumps(completed()).encode()
    assert reason(json.loads(sign_bytes(unsigned, KEYRING))) == "accepted"
    payment = json.dumps({**completed(), "type": "payment.recorded"}).encode()
    assert sign_bytes(payment, KEYRING) == payment


# The hook: ``envelope.parse`` verifies before anything else looks at the data.

@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(resolve_schemas_dir(Settings()))


def parsed(value: bytes, registry: SchemaRegistry, keyring: Keyring = TEST_KEYRING) -> str:
    try:
        parse(RawMessage("bank-returns", 0, 0, None, value), registry, BANK_TYPES, keyring)
    except Rejected as rejected:
        return rejected.reason_code
    return "accepted"


def test_parse_accepts_events_signed_by_the_accounts_bank(registry):
    assert parsed(cloudevent("refund.completed", bank_completion()), registry) == "accepted"
    assert parsed(cloudevent("refund.failed", bank_failure()), registry) == "accepted"
    assert parsed(cloudevent("refund.requested", refund_request(iban=IBAN_OTHER)), registry) == "accepted"
    assert parsed(cloudevent("refund.requested", refund_request(channel="ABSHER"), source="absher",
                             signed=False), registry) == "accepted"


def test_parse_rejects_unsigned_forged_and_unverifiable_bank_events(registry):
    assert parsed(cloudevent("refund.completed", bank_completion(), signed=False), registry) == "unsigned_event"
    assert parsed(cloudevent("refund.completed", bank_completion(), source="bank/20"), registry) == "wrong_signer"
    other = Keyring.parse({code: {f"x-{code}": "z" * 32} for code in TEST_BANK_KEYS})
    assert parsed(cloudevent("refund.completed", bank_completion(), keyring=other), registry) == "wrong_signer"
    assert parsed(cloudevent("refund.completed", bank_completion()), registry, NO_KEYS) == "no_signing_keys"
    tampered = json.loads(cloudevent("refund.completed", bank_completion(amount=100)))
    tampered["data"]["amount"] = 100000
    assert parsed(json.dumps(tampered).encode(), registry) == "bad_signature"


def test_up_generates_demo_keys_the_services_and_the_demo_traffic_share(tmp_path):
    from itertools import islice

    from services.cli.simulate import Scenario, signed
    from services.cli.stack import LocalStack

    stack = LocalStack(tmp_path)
    settings = stack.bank_keys(Settings())
    assert stack.demo_keys and stack.keys_file.stat().st_mode & 0o077 == 0, "the key file is private"
    served = Keyring.parse(Settings.from_env({"BANK_SIGNING_KEYS_FILE": str(stack.keys_file)}).bank_signing_keys)
    registry = SchemaRegistry(resolve_schemas_dir(Settings()))
    bank_events = 0
    for n, record in enumerate(signed(islice(Scenario(seed=5).events(), 3000), Keyring.parse(
            settings.bank_signing_keys))):
        attributes = json.loads(record.value)
        if requires_signature(attributes["type"], attributes["data"]):
            bank_events += 1
            parse(RawMessage(record.topic, 0, n, record.key, record.value), registry,
                  BANK_TYPES, served)  # raises unless signed with a key the services hold
    assert bank_events > 50
