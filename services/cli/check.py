"""``refund-ledger check-event``: validate partner events exactly as the services do."""

from __future__ import annotations

import sys
from pathlib import Path

from services.kit.envelope import RawMessage, Rejected, SchemaRegistry, parse, resolve_schemas_dir
from services.kit.settings import Settings
from services.kit.signatures import NO_KEYS, Keyring
from services.kit.topics import INBOUND_TYPES

#: Which inbound types each partner topic accepts (the kit's table, the services use the same).
TOPIC_TYPES = INBOUND_TYPES


def check_lines(lines, registry: SchemaRegistry, topic: str | None,
                keyring: Keyring = NO_KEYS) -> list[tuple[int, str, str]]:
    """(line number, verdict, reason) per non-blank line; verdict is 'accepted' or a reason code.

    Bank events are checked against ``keyring`` as the services check them: with no keys
    (no BANK_SIGNING_KEYS) every bank event is ``no_signing_keys``."""
    accepted = TOPIC_TYPES[topic] if topic else frozenset().union(*TOPIC_TYPES.values())
    results = []
    for number, line in enumerate(lines, start=1):
        raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        message = RawMessage(topic=topic or "(any)", partition=0, offset=number, key=None, value=raw)
        try:
            envelope = parse(message, registry, accepted, keyring)
        except Rejected as rejected:
            results.append((number, rejected.reason_code, rejected.reason))
        else:
            results.append((number, "accepted", f"{envelope.type} {envelope.id}"))
    return results


def check_events(settings: Settings, file: str, topic: str | None) -> int:
    if topic is not None and topic not in TOPIC_TYPES:
        raise ValueError(f"unknown topic {topic!r}; inbound topics are {', '.join(TOPIC_TYPES)}")
    registry = SchemaRegistry(resolve_schemas_dir(settings))
    keyring = Keyring.parse(settings.bank_signing_keys)
    if file == "-":
        results = check_lines(sys.stdin.buffer, registry, topic, keyring)
    else:
        with Path(file).open("rb") as stream:
            results = check_lines(stream, registry, topic, keyring)
    for number, verdict, reason in results:
        print(f"{number}: {verdict}" + ("" if verdict == "accepted" else f" - {reason}"))
    rejected = sum(1 for _, verdict, _ in results if verdict != "accepted")
    print(f"{len(results) - rejected} accepted, {rejected} rejected", file=sys.stderr)
    return 1 if rejected else 0
