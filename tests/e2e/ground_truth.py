"""The ground truth of a simulated scenario, computed from the scenario itself,
and a comparison with what the audit read model says.

The model below is an independent, deliberately naive re-statement of the
ledger's rules (DOMAIN.md / README "Domain decisions"), applied to the
partner events in the order the services are guaranteed to see them: one
person's events on one topic are in order, and the fault tests send the
refund requests only after every payment was applied, and the bank answers
only after every request was decided (topics carry no order between them).

What depends on the clock at the time of processing (overdue flags,
unreflected payments, status mismatches: durable timers) is not compared.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.kit.kafka import Record
from services.kit.rules import load_rules
from services.refunds.domain import visa_refund_id

#: Topics whose events the services apply without depending on another topic.
FACT_TOPICS = ("payments", "visas", "cancellations")


def waves(records: Sequence[Record]) -> tuple[list[Record], list[Record], list[Record]]:
    """The scenario split by dependency: facts, then refund requests, then bank answers
    (each list in scenario order)."""
    facts = [r for r in records if r.topic in FACT_TOPICS]
    requests = [r for r in records if r.topic == "refund-requests"]
    answers = [r for r in records if r.topic == "bank-returns"]
    assert len(facts) + len(requests) + len(answers) == len(records)
    return facts, requests, answers


@dataclass
class Balance:
    credited: int = 0
    charged: int = 0
    held: int = 0
    refunded: int = 0
    payer_ibans: set[str] = field(default_factory=set)

    @property
    def available(self) -> int:
        return self.credited - self.charged - self.held - self.refunded

    def row(self) -> tuple[int, int, int, int, int]:
        return self.credited, self.charged, self.held, self.refunded, self.available


@dataclass
class Truth:
    """What the ledger must say after the scenario, nothing lost, nothing doubled."""

    balances: dict[tuple[str, str, str], Balance] = field(default_factory=lambda: defaultdict(Balance))
    payments: dict[str, tuple[int, bool]] = field(default_factory=dict)   # payment_id -> (amount, acknowledged)
    refunds: dict[str, str] = field(default_factory=dict)                  # refund_id -> state
    visas: dict[str, str | None] = field(default_factory=dict)             # visa_key -> route (None: not routed)
    events: Counter = field(default_factory=Counter)                       # (topic, type) -> count
    refunded_holds: int = 0
    _holds: dict[str, tuple[tuple[str, str, str], int]] = field(default_factory=dict)
    _visa_facts: dict[str, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))

    @classmethod
    def of(cls, records: Iterable[Record]) -> Truth:
        truth = cls()
        rules = load_rules(None)
        opened = False
        for record in records:
            if record.topic not in FACT_TOPICS and not opened:
                truth._open_visa_refunds(rules)
                opened = True
            event = json.loads(record.value)
            truth.events[(record.topic, event["type"])] += 1
            getattr(truth, "_" + event["type"].replace(".", "_"))(event["data"])
        if not opened:
            truth._open_visa_refunds(rules)
        return truth

    # -- payments topic
    def _payment_recorded(self, d: dict[str, Any]) -> None:
        balance = self.balances[(d["beneficiary_id"], d["agency"], d["service_code"])]
        balance.credited += d["amount"]
        balance.payer_ibans.add(d["payer_iban"])
        self.payments[d["payment_id"]] = (d["amount"], False)

    def _payment_acknowledged(self, d: dict[str, Any]) -> None:
        amount, _ = self.payments[d["payment_id"]]
        self.payments[d["payment_id"]] = (amount, True)

    def _fee_charged(self, d: dict[str, Any]) -> None:
        balance = self.balances[(d["beneficiary_id"], d["agency"], d["service_code"])]
        assert balance.available >= d["amount"], "the scenario never charges more than was paid"
        balance.charged += d["amount"]

    # -- visas and cancellations topics
    def _visa_issued(self, d: dict[str, Any]) -> None:
        self._visa(d).update(visa_type=d["visa_type"], issued_at=d["issued_at"], payment_id=d["payment_id"])

    def _visa_cancellation_requested(self, d: dict[str, Any]) -> None:
        self._visa(d)["requested_at"] = d["requested_at"]

    def _visa_cancellation_accepted(self, d: dict[str, Any]) -> None:
        self._visa(d)["accepted_at"] = d["accepted_at"]

    def _visa_status_changed(self, d: dict[str, Any]) -> None:
        self._visa(d)

    def _visa(self, d: dict[str, Any]) -> dict[str, Any]:
        facts = self._visa_facts[f"{d['sponsor_id']}/{d['export_number']}/{d['serial_number']}"]
        facts["refund_id"] = visa_refund_id(d["sponsor_id"], d["export_number"], d["serial_number"])
        return facts

    # -- refund-requests topic (after every fact)
    def _refund_requested(self, d: dict[str, Any]) -> None:
        if d["channel"] == "ABSHER":
            self.refunds[d["request_id"]] = "JAWAZAT_QUEUE"
            return
        key = (d["beneficiary_id"], d["agency"], d["service_code"])
        balance = self.balances.get(key)
        if balance is None or d["iban"] not in balance.payer_ibans or d["amount"] > balance.available:
            self.refunds[d["request_id"]] = "REJECTED"
            return
        balance.held += d["amount"]
        self._holds[d["request_id"]] = (key, d["amount"])
        self.refunds[d["request_id"]] = "ORDERED"

    def _open_visa_refunds(self, rules) -> None:
        """Every visa whose cancellation was requested and accepted is routed; a refundable
        one opens its refund (ordered at once unless it waits for a review)."""
        for key, facts in self._visa_facts.items():
            self.visas[key] = None
            if {"issued_at", "requested_at", "accepted_at"} <= facts.keys():
                route = self.visas[key] = _route(facts, rules)
                if route in ("AUTOMATIC", "MOFA"):
                    self.refunds[facts["refund_id"]] = "ORDERED"
                elif route == "MANUAL_REVIEW":
                    self.refunds[facts["refund_id"]] = "MANUAL_REVIEW"

    # -- bank-returns topic (after every request was decided)
    def _refund_completed(self, d: dict[str, Any]) -> None:
        self._answer(d["refund_id"], "COMPLETED")

    def _refund_failed(self, d: dict[str, Any]) -> None:
        self._answer(d["refund_id"], "FAILED")

    def _answer(self, refund_id: str, outcome: str) -> None:
        if self.refunds.get(refund_id) != "ORDERED":
            return  # an answer to no order (a case in review): parked, nothing changes
        self.refunds[refund_id] = outcome
        if refund_id in self._holds:
            key, amount = self._holds.pop(refund_id)
            self.balances[key].held -= amount
            if outcome == "COMPLETED":
                self.balances[key].refunded += amount
                self.refunded_holds += 1


def _route(facts: dict[str, Any], rules) -> str:
    """The route of a cancelled visa (README "Visa routing"), restated independently."""
    issued = datetime.fromisoformat(facts["issued_at"])
    requested = datetime.fromisoformat(facts["requested_at"])
    if facts["visa_type"] in rules.non_refundable_visa_types:
        return "NON_REFUNDABLE"
    if facts["visa_type"] not in rules.refundable_visa_types or requested < issued:
        return "MANUAL_REVIEW"
    issued_on = issued.astimezone(ZoneInfo("Asia/Riyadh")).date()
    if date(2020, 3, 1) <= issued_on <= date(2022, 3, 31):
        return "MANUAL_REVIEW"
    return "AUTOMATIC" if requested - issued < timedelta(hours=72) else "MOFA"


def mismatches(conn, truth: Truth) -> list[str]:
    """Every difference between the audit read model and the truth (empty: they agree)."""
    found: list[str] = []

    def compare(what: str, expected: dict, actual: dict) -> None:
        for key in expected.keys() | actual.keys():
            if expected.get(key) != actual.get(key):
                found.append(f"{what} {key}: expected {expected.get(key)!r}, read model {actual.get(key)!r}")

    compare("balance", {k: b.row() for k, b in truth.balances.items()},
            {(r[0], r[1], r[2]): tuple(r[3:]) for r in conn.execute(
                "SELECT beneficiary_id, agency, service_code, credited, charged, held, refunded, available "
                "FROM audit.balances")})
    compare("payment", truth.payments, {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT payment_id, amount, acknowledged_at IS NOT NULL FROM audit.payments")})
    compare("refund", truth.refunds, dict(conn.execute("SELECT refund_id, state FROM audit.refunds").fetchall()))
    compare("visa route", truth.visas, dict(conn.execute("SELECT visa_key, route FROM audit.visas").fetchall()))
    facts = dict(conn.execute("SELECT type, count(*) FROM audit.ledger_events GROUP BY type").fetchall())
    expected_facts = {
        "ledger.payment.recorded": truth.events[("payments", "payment.recorded")],
        "ledger.balance.credited": truth.events[("payments", "payment.recorded")],
        "ledger.payment.acknowledged": truth.events[("payments", "payment.acknowledged")],
        "ledger.balance.charged": truth.events[("payments", "fee.charged")],
        "ledger.visa.issued": truth.events[("visas", "visa.issued")],
        "ledger.refund.requested": len(truth.refunds),
        "ledger.refund.completed": sum(s == "COMPLETED" for s in truth.refunds.values()),
        "ledger.refund.failed": sum(s == "FAILED" for s in truth.refunds.values()),
        "ledger.balance.refunded": truth.refunded_holds,
    }
    compare("ledger facts of type", expected_facts, {k: facts.get(k, 0) for k in expected_facts})
    return sorted(found)
