"""Personal data in a read model: field encryption and keyed lookup hashes, from ``CIPHER_KEY``.

The event stores are encrypted whole by the ``eventsourcing`` cipher; a read model must still
find a case by an IBAN, so its IBAN columns hold ciphertext and a keyed hash of the IBAN sits
next to them (indexed) for exact-match search. Two keys are derived from ``CIPHER_KEY`` with
HKDF-SHA256, one per purpose:

* ``seal``/``open``: AES-256-GCM, a fresh 96-bit nonce per value, stored as
  ``enc:v1:<base64 nonce + ciphertext + tag>``;
* ``lookup``: HMAC-SHA256 of the compact, upper-case value, stored as ``kh:<hex>``: equal IBANs
  give equal hashes (that is what makes the search work), and nobody without the key can
  compute one to confirm a guess.

Without a key (development) :data:`CLEAR` stores values as they are and ``lookup`` is None:
nothing changes. A value that is not ``enc:v1:`` is read as it is (rows written before the key
was set; ``refund-ledger rebuild-read-model`` rewrites them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

PREFIX = "enc:v1:"
HASH_PREFIX = "kh:"
#: Anything that looks like a Saudi IBAN inside free text (a raw rejected message, a reason, a query).
IBAN_LIKE = re.compile(r"SA\s*[0-9]{2}(?:\s*[0-9A-Z]){20}", re.IGNORECASE)
_SALT = b"refund-ledger/read-model-pii"
_NONCE, _TAG = 12, 16


class FieldCipher:
    """Seals personal values of a read model; identity when built without a key."""

    def __init__(self, cipher_key: str = "") -> None:
        self._seal_key = self._hash_key = b""
        if cipher_key:
            try:
                master = base64.b64decode(cipher_key.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                raise ValueError("CIPHER_KEY is not base64") from None
            if len(master) not in {16, 24, 32}:
                raise ValueError(f"CIPHER_KEY must be 16, 24 or 32 bytes, got {len(master)}")
            self._seal_key = HKDF(master, 32, _SALT, SHA256, context=b"field encryption v1")
            self._hash_key = HKDF(master, 32, _SALT, SHA256, context=b"lookup hash v1")

    @classmethod
    def for_settings(cls, settings: Any) -> FieldCipher:
        """From ``Settings.cipher_key``; refuses (SettingsError) without one when CIPHER_REQUIRED is set."""
        settings.cipher_env()  # raises when the key is required and missing
        return cls(settings.cipher_key)

    @property
    def keyed(self) -> bool:
        return bool(self._seal_key)

    # -- single values ------------------------------------------------------------------------------------------

    def seal(self, value: str | None) -> str | None:
        if value is None or not self.keyed or value.startswith(PREFIX):
            return value
        nonce = os.urandom(_NONCE)
        ciphertext, tag = AES.new(self._seal_key, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(value.encode())
        return PREFIX + base64.b64encode(nonce + ciphertext + tag).decode("ascii")

    def open(self, value: Any) -> Any:
        """The clear value of a sealed one; anything else unchanged."""
        if not (isinstance(value, str) and value.startswith(PREFIX) and self.keyed):
            return value
        blob = base64.b64decode(value[len(PREFIX):])
        nonce, ciphertext, tag = blob[:_NONCE], blob[_NONCE:-_TAG], blob[-_TAG:]
        return AES.new(self._seal_key, AES.MODE_GCM, nonce=nonce).decrypt_and_verify(ciphertext, tag).decode()

    def seal_bytes(self, value: bytes | None) -> bytes | None:
        if value is None or not self.keyed:
            return value
        return self.seal(base64.b64encode(value).decode("ascii")).encode("ascii")  # type: ignore[union-attr]

    def lookup(self, value: str | None) -> str | None:
        """The keyed hash an exact-match search compares (spaces dropped, upper case); None without a key."""
        if value is None or not self.keyed:
            return None
        compact = "".join(value.split()).upper()
        return HASH_PREFIX + hmac.new(self._hash_key, compact.encode(), hashlib.sha256).hexdigest()

    # -- structures ---------------------------------------------------------------------------------------------

    def seal_ibans(self, data: Any) -> Any:
        """``data`` (JSON-like) with every string that holds something IBAN-like sealed whole."""
        if not self.keyed:
            return data
        if isinstance(data, str):
            return self.seal(data) if IBAN_LIKE.search(data) else data
        if isinstance(data, Mapping):
            return {k: self.seal_ibans(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.seal_ibans(v) for v in data]
        return data

    def open_all(self, data: Any) -> Any:
        """The reverse of :meth:`seal_ibans` (and :meth:`seal` of a string)."""
        if isinstance(data, str):
            return self.open(data)
        if isinstance(data, Mapping):
            return {k: self.open_all(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.open_all(v) for v in data]
        return data

    def open_row(self, row: Any) -> Any:
        """A database row with its sealed columns opened (a jsonb column, as JSON text, inside too);
        the row itself when there is no key."""
        if not self.keyed or row is None:
            return row
        return {name: self._open_column(value) for name, value in row.items()}

    def _open_column(self, value: Any) -> Any:
        if isinstance(value, str) and not value.startswith(PREFIX) and PREFIX in value:
            try:  # a jsonb column (asyncpg gives its JSON text) with sealed strings inside
                return json.dumps(self.open_all(json.loads(value)), ensure_ascii=False)
            except ValueError:
                return value  # not JSON: a text that merely contains the prefix
        return self.open(value)

    def hide_ibans(self, text: str) -> str:
        """``text`` with every IBAN-like part replaced by its keyed hash (the access log's filters and paths)."""
        if not self.keyed:
            return text
        return IBAN_LIKE.sub(lambda m: self.lookup(m[0]) or "", text)


#: No key: values stored in clear (development and tests that set no CIPHER_KEY).
CLEAR = FieldCipher()
