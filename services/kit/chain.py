"""Tamper evidence: every aggregate's stored events form a hash chain.

The hash of stored event ``v`` of an aggregate is SHA-256 over, in order:

* the hash of event ``v - 1`` (32 bytes; 32 zero bytes for the first event),
* the originator id (16 bytes of the UUID),
* the originator version (8 bytes, big-endian),
* the topic (4-byte big-endian length, then UTF-8),
* the stored state exactly as stored (8-byte big-endian length, then the
  bytes; ciphertext when the store is encrypted, so checking needs no key).

``event_hashes`` holds each event's hash and the SHA-256 of its state, written
in the same transaction as the event (``IngressRecorder``). A digest of all
chains, SHA-256 over the lines ``<originator id>:<version>:<hash>\\n`` of every
aggregate's newest event (by originator id, byte order), is recorded in
``chain_digests`` at the end of a write at most every ``CHAIN_DIGEST_INTERVAL``
seconds, with the last notification id it covers, and logged.
``refund-ledger verify`` recomputes all of it (``services/cli/verify.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from uuid import UUID

GENESIS = "0" * 64


def state_digest(state: bytes) -> str:
    return hashlib.sha256(state).hexdigest()


def event_hash(previous: str, originator_id: UUID | str, version: int, topic: str, state: bytes) -> str:
    """The chain hash of one stored event, given the hash of the event before it."""
    identity = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    topic_bytes = topic.encode("utf-8")
    digest = hashlib.sha256()
    digest.update(bytes.fromhex(previous))
    digest.update(identity.bytes)
    digest.update(version.to_bytes(8, "big"))
    digest.update(len(topic_bytes).to_bytes(4, "big"))
    digest.update(topic_bytes)
    digest.update(len(state).to_bytes(8, "big"))
    digest.update(state)
    return digest.hexdigest()


def chains_digest(heads: Iterable[tuple[UUID, int, str]]) -> tuple[int, str]:
    """How many chains, and the digest of them all, from each aggregate's (id, newest version, its
    hash) in the order of the ids' bytes (PostgreSQL's order of uuid, as :func:`chain_heads` streams
    them: never all in memory at once)."""
    digest = hashlib.sha256()
    count = 0
    for originator_id, version, hash_ in heads:
        digest.update(f"{originator_id}:{version}:{hash_}\n".encode())
        count += 1
    return count, digest.hexdigest()
