"""Signed bank events: HMAC-SHA256 over a canonical form of the CloudEvent.

A bank signs every event it sends about money it moves (``refund.completed``,
``refund.failed`` on ``bank-returns``; ``refund.requested`` with channel
``BANK`` on ``refund-requests``) with its own secret key, and says which key in
two CloudEvents extension attributes::

    "signaturekeyid": "80-2026-11",
    "signature": "v1=<64 lower-case hex digits>"

The signed bytes (``canonical_bytes``) are the UTF-8 encoding of the JSON
object ``{"data": …, "id": …, "source": …, "time": …, "type": …}`` holding the
event's attributes exactly as sent, serialised with keys sorted, no
whitespace and no ASCII escaping of non-ASCII characters (for the strings and
integers these events carry, the same bytes as RFC 8785, JCS).
``schemas/README.md`` spells this out for partners.

The bank is the one the ``source`` names (``bank/80`` -> ``80``); where the
event names an account (``iban``), its bank code must be the same. Keys come
from configuration (``BANK_SIGNING_KEYS``): bank code -> {key id -> secret}.
Every listed key verifies (rotation: keep the old key listed until the bank
has switched); a sender signs with the bank's last-listed key.

Pure: no I/O, no clock. :func:`verify` raises :class:`Rejected` with one of
``no_signing_keys``, ``unsigned_event``, ``bad_signature``, ``wrong_signer``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.kit.errors import Rejected

SIGNATURE = "signature"
KEY_ID = "signaturekeyid"
SCHEME = "v1"
SIGNED_ATTRIBUTES = ("id", "source", "type", "time", "data")
MIN_SECRET_BYTES = 32

_BANK_SOURCE = re.compile(r"^bank/([0-9]{2})$")
_BANK_CODE = re.compile(r"^[0-9]{2}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SIGNATURE = re.compile(r"^v1=([0-9a-f]{64})$")


class KeyringError(ValueError):
    """Raised when the configured bank signing keys are not a valid keyring."""


def requires_signature(event_type: str, data: Any) -> bool:
    """Whether this inbound event must carry its bank's signature."""
    if event_type in {"refund.completed", "refund.failed"}:
        return True
    return event_type == "refund.requested" and isinstance(data, dict) and data.get("channel") == "BANK"


def bank_of(source: str) -> str | None:
    """The bank code a ``source`` names (``bank/80`` -> ``80``), or None for a non-bank source."""
    match = _BANK_SOURCE.match(source) if isinstance(source, str) else None
    return match.group(1) if match else None


def canonical_bytes(attributes: Mapping[str, Any]) -> bytes:
    """The bytes a bank signs: id, source, type, time and data as canonical JSON, UTF-8."""
    signed = {name: attributes.get(name) for name in SIGNED_ATTRIBUTES}
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError


def _mac(secret: bytes, attributes: Mapping[str, Any]) -> str:
    return hmac.new(secret, canonical_bytes(attributes), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Keyring:
    """Bank code -> {key id -> secret}. Key ids are unique across banks."""

    banks: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any) -> Keyring:
        """Validate a decoded ``BANK_SIGNING_KEYS`` object; raise :class:`KeyringError` naming the fault."""
        if not isinstance(raw, dict):
            raise KeyringError("bank signing keys must be a JSON object: bank code -> {key id -> secret}")
        banks: dict[str, dict[str, bytes]] = {}
        owners: dict[str, str] = {}
        for bank, keys in raw.items():
            if not isinstance(bank, str) or not _BANK_CODE.match(bank):
                raise KeyringError(f"bank code {bank!r} is not two digits")
            if not isinstance(keys, dict) or not keys:
                raise KeyringError(f"bank {bank}: give at least one key as {{key id -> secret}}")
            banks[bank] = {}
            for key_id, secret in keys.items():
                if not _KEY_ID.match(key_id):
                    raise KeyringError(f"bank {bank}: key id {key_id!r} must match {_KEY_ID.pattern}")
                if key_id in owners:
                    raise KeyringError(f"key id {key_id!r} is listed for banks {owners[key_id]} and {bank}")
                if not isinstance(secret, str) or len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
                    raise KeyringError(f"bank {bank}: key {key_id!r} must be a string of at least "
                                       f"{MIN_SECRET_BYTES} bytes")
                owners[key_id] = bank
                banks[bank][key_id] = secret.encode("utf-8")
        return cls(banks)

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            return cls.parse(json.loads(text)) if text.strip() else cls()
        except json.JSONDecodeError as exc:
            raise KeyringError(f"bank signing keys are not JSON: {exc.msg}") from None

    def __bool__(self) -> bool:
        return bool(self.banks)

    def owner_of(self, key_id: str) -> str | None:
        return next((bank for bank, keys in self.banks.items() if key_id in keys), None)

    def newest(self, bank: str) -> tuple[str, bytes]:
        """The key a sender signs with: the bank's last-listed key."""
        keys = self.banks.get(bank)
        if not keys:
            raise KeyError(f"no signing key for bank {bank}")
        key_id = list(keys)[-1]
        return key_id, keys[key_id]


NO_KEYS = Keyring()


def demo_keys(bank_codes: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Fresh random keys, two per bank (a rotation in progress), for a local demo only."""
    return {code: {f"demo-{code}-a": secrets.token_urlsafe(32), f"demo-{code}-b": secrets.token_urlsafe(32)}
            for code in bank_codes}


def sign(attributes: dict[str, Any], keyring: Keyring) -> dict[str, Any]:
    """The CloudEvent attributes with the signature of the bank its ``source`` names (newest key)."""
    bank = bank_of(attributes.get("source", ""))
    if bank is None:
        raise ValueError(f"source {attributes.get('source')!r} is not a bank (bank/NN)")
    key_id, secret = keyring.newest(bank)
    return {**attributes, KEY_ID: key_id, SIGNATURE: f"{SCHEME}={_mac(secret, attributes)}"}


def sign_bytes(value: bytes, keyring: Keyring) -> bytes:
    """Sign one serialised CloudEvent if it is a bank event that must be signed; else return it as is."""
    attributes = json.loads(value)
    if not requires_signature(attributes.get("type", ""), attributes.get("data")):
        return value
    return json.dumps(sign(attributes, keyring), ensure_ascii=False).encode("utf-8")


def verify(attributes: Mapping[str, Any], keyring: Keyring) -> None:
    """Raise :class:`Rejected` unless a bank event carries a valid signature of its own bank."""
    data = attributes.get("data")
    if not requires_signature(attributes.get("type", ""), data):
        return
    if not keyring:
        raise Rejected("no_signing_keys", "bank events must be signed and this service has no bank signing keys "
                                          "configured (BANK_SIGNING_KEYS)")
    signature, key_id = attributes.get(SIGNATURE), attributes.get(KEY_ID)
    missing = [name for name, value in ((SIGNATURE, signature), (KEY_ID, key_id)) if value in (None, "")]
    if missing:
        raise Rejected("unsigned_event", f"a {attributes['type']} event must be signed by its bank; missing "
                                         f"extension attribute(s): {', '.join(missing)}")
    source = attributes.get("source", "")
    bank = bank_of(source)
    if bank is None:
        raise Rejected("wrong_signer", f"source {source!r} is not a bank (expected bank/NN)")
    iban = data.get("iban") if isinstance(data, dict) else None
    if isinstance(iban, str) and iban[4:6] != bank:
        raise Rejected("wrong_signer", f"the account's bank is {iban[4:6]} but the event comes from {source}")
    if not isinstance(key_id, str) or key_id not in keyring.banks.get(bank, {}):
        owner = keyring.owner_of(key_id) if isinstance(key_id, str) else None
        whose = f"bank {owner}'s key" if owner else "not a known key"
        raise Rejected("wrong_signer", f"key id {key_id!r} is {whose}, not one of bank {bank}'s")
    match = _SIGNATURE.match(signature) if isinstance(signature, str) else None
    if match is None:
        raise Rejected("bad_signature", "signature must be 'v1=' and 64 lower-case hex digits (HMAC-SHA256)")
    try:
        expected = _mac(keyring.banks[bank][key_id], attributes)
    except (UnicodeEncodeError, ValueError):
        raise Rejected("bad_signature", "the event cannot be put in canonical form (invalid string)") from None
    if hmac.compare_digest(expected, match.group(1)):
        return
    for other, keys in keyring.banks.items():
        if other != bank and any(hmac.compare_digest(_mac(k, attributes), match.group(1)) for k in keys.values()):
            raise Rejected("wrong_signer", f"signed with bank {other}'s key, but the event comes from {source}")
    raise Rejected("bad_signature", f"signature does not match the event under key {key_id!r} of bank {bank}")
