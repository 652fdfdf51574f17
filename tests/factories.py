"""Builders of realistic inbound CloudEvents for tests."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from services.kit.envelope import RawMessage
from services.kit.signatures import Keyring, requires_signature, sign

IBAN_OWN = "SA0380000000608010167519"       # Al Rajhi (80), valid mod-97
IBAN_OTHER = "SA4420000001234567891234"     # Riyad Bank (20), valid mod-97
IBAN_BAD_CHECKSUM = "SA0480000000608010167519"
PAID_AT = datetime(2026, 11, 1, 9, 30, tzinfo=timezone(timedelta(hours=3)))


# TEST-ONLY bank signing keys (never used outside tests): two per bank, as during a key rotation.
TEST_BANK_CODES = ("05", "10", "15", "20", "30", "45", "55", "60", "65", "80")
TEST_BANK_KEYS = {code: {f"test-{code}-old": f"test-only-bank-{code}-old-key-not-a-secret",
                         f"test-{code}-new": f"test-only-bank-{code}-new-key-not-a-secret"}
                  for code in TEST_BANK_CODES}
TEST_KEYRING = Keyring.parse(TEST_BANK_KEYS)
TEST_BANK_KEYS_JSON = json.dumps(TEST_BANK_KEYS)


def cloudevent(event_type: str, data: dict[str, Any], *, event_id: str | None = None,
               source: str | None = None, time: datetime = PAID_AT, signed: bool = True,
               keyring: Keyring = TEST_KEYRING) -> bytes:
    """A CloudEvent as a partner sends it. A bank event comes from the bank of its IBAN (else bank/80)
    and is signed with that bank's test key unless ``signed=False``."""
    if source is None:
        iban = data.get("iban") if isinstance(data, dict) else None
        source = f"bank/{iban[4:6]}" if isinstance(iban, str) and requires_signature(event_type, data) else "bank/80"
    attributes = {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": source,
                  "type": event_type, "time": time.isoformat(), "data": data}
    if signed and requires_signature(event_type, data):
        attributes = sign(attributes, keyring)
    return json.dumps(attributes).encode()


def payment(payment_id: str = "PAY-1", *, beneficiary_id: str = "1012345672", amount: int = 30000,
            payer_id: str | None = None, payer_iban: str = IBAN_OWN, agency: str = "JAWAZAT",
            service_code: str = "PASSPORT_ISSUE", paid_at: datetime = PAID_AT) -> dict[str, Any]:
    return {"payment_id": payment_id, "beneficiary_id": beneficiary_id,
            "payer_id": payer_id or beneficiary_id, "payer_iban": payer_iban, "agency": agency,
            "service_code": service_code, "amount": amount, "currency": "SAR",
            "channel": "SADAD_ONLINE", "paid_at": paid_at.isoformat()}


def acknowledgement(payment_id: str = "PAY-1", at: datetime = PAID_AT + timedelta(minutes=5)) -> dict[str, Any]:
    return {"payment_id": payment_id, "acknowledged_at": at.isoformat()}


def charge(charge_id: str = "CHG-1", *, beneficiary_id: str = "1012345672", amount: int = 20000,
           agency: str = "JAWAZAT", service_code: str = "PASSPORT_ISSUE") -> dict[str, Any]:
    return {"charge_id": charge_id, "beneficiary_id": beneficiary_id, "agency": agency,
            "service_code": service_code, "amount": amount,
            "charged_at": (PAID_AT + timedelta(hours=1)).isoformat()}


def refund_request(request_id: str = "RR-1", *, beneficiary_id: str = "1012345672", amount: int = 10000,
                   iban: str = IBAN_OWN, channel: str = "BANK", agency: str = "JAWAZAT",
                   service_code: str = "PASSPORT_ISSUE", at: datetime = PAID_AT + timedelta(days=1)) -> dict[str, Any]:
    return {"request_id": request_id, "beneficiary_id": beneficiary_id, "agency": agency,
            "service_code": service_code, "amount": amount, "iban": iban, "channel": channel,
            "requested_at": at.isoformat()}


def bank_completion(refund_id: str = "RR-1", *, amount: int = 10000, iban: str = IBAN_OWN,
                    reference: str = "BR-1", at: datetime = PAID_AT + timedelta(days=2)) -> dict[str, Any]:
    return {"refund_id": refund_id, "bank_reference": reference, "amount": amount, "iban": iban,
            "completed_at": at.isoformat()}


def bank_failure(refund_id: str = "RR-1", *, reference: str = "BR-F1", reason: str = "account closed",
                 at: datetime = PAID_AT + timedelta(days=2)) -> dict[str, Any]:
    return {"refund_id": refund_id, "bank_reference": reference, "reason": reason, "failed_at": at.isoformat()}


class Messages:
    """Raw Kafka records with increasing offsets, as a consumer would see them."""

    def __init__(self, topic: str = "payments", partition: int = 0) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = -1

    def __call__(self, value: bytes | None, key: bytes | None = b"1012345672", *,
                 offset: int | None = None) -> RawMessage:
        if offset is None:
            self.offset += 1
            offset = self.offset
        return RawMessage(self.topic, self.partition, offset, key, value)
