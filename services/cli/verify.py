"""``refund-ledger verify``: recompute every hash chain and digest; name the first altered or deleted event.

Reads the event stores straight from PostgreSQL (``DATABASE_URL``), one
service schema at a time, and needs no key: the chain covers the bytes as
stored (``services/kit/chain.py``). Exit 0 when every store verifies, 1 when
anything was altered or deleted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from services.kit.chain import GENESIS, chains_digest, event_hash, state_digest
from services.kit.settings import Settings
from services.kit.store import chain_heads

SCHEMAS = ("payments", "visas", "refunds", "notifier")


@dataclass(frozen=True)
class Finding:
    """One altered or deleted stored event (or digest)."""

    schema: str
    originator_id: UUID | None
    version: int | None
    what: str

    def __str__(self) -> str:
        where = f"aggregate {self.originator_id} version {self.version}" if self.originator_id else "digest"
        return f"{self.schema}: {where}: {self.what}"


@dataclass
class Report:
    schema: str
    events_table: str = ""
    events: int = 0
    chains: int = 0
    digests: int = 0
    skipped: bool = False
    findings: list[Finding] = field(default_factory=list)


def _rows(conn: psycopg.Connection, schema: str, events_table: str) -> Iterator[dict]:
    """Stored events and recorded hashes side by side, by aggregate and version (a server-side cursor)."""
    with conn.cursor(name=f"verify_{schema}", row_factory=dict_row) as curs:
        curs.itersize = 2000
        curs.execute(SQL(
            "SELECT coalesce(e.originator_id, h.originator_id) AS originator_id, "
            "coalesce(e.originator_version, h.originator_version) AS version, "
            "e.originator_id IS NOT NULL AS stored, e.topic, e.state, h.hash, h.state_sha256 "
            "FROM {0}.{1} e FULL OUTER JOIN {0}.event_hashes h USING (originator_id, originator_version) "
            "ORDER BY 1, 2").format(Identifier(schema), Identifier(events_table)))
        yield from curs


def _check_event(row: dict, link: str | None, report: Report) -> str:
    """Check one row against the chain; return the hash the next event must link to."""
    originator_id, version = UUID(str(row["originator_id"])), row["version"]

    def found(what: str) -> None:
        report.findings.append(Finding(report.schema, originator_id, version, what))

    if not row["stored"]:
        found("deleted: the event is gone from the store but its hash was recorded")
        return row["hash"]
    state = bytes(row["state"])
    computed = event_hash(link or GENESIS, originator_id, version, row["topic"], state)
    if row["hash"] is None:
        found("no recorded hash: the event was written outside the ledger")
        return computed
    if row["state_sha256"] != state_digest(state):
        found("stored state altered: its bytes differ from those recorded")
    elif link is not None and computed != row["hash"]:
        found("altered: the topic, the identity or the previous event's hash differs from what was recorded")
    return row["hash"]


def _check_chains(conn: psycopg.Connection, report: Report) -> None:
    current: UUID | None = None
    expected, link = 1, GENESIS
    for row in _rows(conn, report.schema, report.events_table):
        originator_id, version = UUID(str(row["originator_id"])), row["version"]
        if originator_id != current:
            current, expected, link = originator_id, 1, GENESIS
            report.chains += 1
        report.events += row["stored"]
        if version != expected:
            missing = f"version {expected}" if version == expected + 1 else f"versions {expected}..{version - 1}"
            report.findings.append(Finding(report.schema, originator_id, expected,
                                           f"deleted: {missing} missing with its hash (the chain skips to {version})"))
            link = None  # the link to a deleted event cannot be checked
        link = _check_event(row, link, report)
        expected = version + 1


def _check_digests(conn: psycopg.Connection, report: Report) -> None:
    with conn.cursor(row_factory=dict_row) as curs:
        curs.execute(SQL("SELECT id, recorded_at, up_to_notification, chains, digest FROM {0}.chain_digests "
                         "ORDER BY id").format(Identifier(report.schema)))
        digests = curs.fetchall()
        for digest in digests:
            report.digests += 1
            chains, recomputed = chains_digest(chain_heads(curs, report.schema, report.events_table,
                                                           digest["up_to_notification"]))
            if recomputed != digest["digest"]:
                report.findings.append(Finding(report.schema, None, None, (
                    f"digest #{digest['id']} of {digest['recorded_at']:%Y-%m-%d %H:%M:%S %Z} over "
                    f"{digest['chains']} chains up to notification {digest['up_to_notification']} no longer matches "
                    f"({chains} chains now): an event recorded before it was deleted or altered")))


def verify_schema(database_url: str, schema: str) -> Report:
    report = Report(schema)
    with psycopg.connect(database_url) as conn:
        conn.read_only = True
        with conn.cursor() as curs:
            # the library's events table (``<application>_events``): the one with a notification log
            curs.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = %s "
                         "AND column_name IN ('notification_id', 'originator_version') "
                         "GROUP BY table_name HAVING count(*) = 2", (schema,))
            tables = [row[0] for row in curs.fetchall()]
            curs.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.event_hashes",))
            has_hashes, has_events = curs.fetchone()[0], bool(tables)
        report.events_table = tables[0] if tables else ""
        if not has_events and not has_hashes:
            report.skipped = True
            return report
        if not (has_events and has_hashes):
            report.findings.append(Finding(schema, None, None, "the event table or the hash table is gone"))
            return report
        _check_chains(conn, report)
        _check_digests(conn, report)
    return report


def verify_command(settings: Settings, schemas: list[str] | None) -> int:
    settings.require("database_url")
    tampered = False
    for schema in schemas or SCHEMAS:
        report = verify_schema(settings.database_url, schema)
        if report.skipped:
            print(f"{schema}: no event store here; skipped")
            continue
        if not report.findings:
            print(f"{schema}: OK: {report.events} events in {report.chains} chains, {report.digests} digests")
            continue
        tampered = True
        print(f"{schema}: TAMPERED: {len(report.findings)} finding(s) in {report.events} events, "
              f"{report.chains} chains, {report.digests} digests")
        print(f"  first: {report.findings[0]}")
        for finding in report.findings[1:20]:
            print(f"  also:  {finding}")
    if tampered:
        print("refund-ledger verify: the event store was altered", file=sys.stderr)
    return 1 if tampered else 0
