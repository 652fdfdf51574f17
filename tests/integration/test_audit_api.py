"""The audit API in-process, on a real PostgreSQL read model.

The read model is loaded the way the audit worker loads it: ledger CloudEvents
written exactly as the services' outbox relays write them (``envelope.write``,
an ``<aggregate>:<version>`` id, ``recordedat``), their data checked against
``schemas/``, applied through ``Projection.apply``. The API is composed as
``services/audit/service.py`` composes it and called through ASGI.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import random
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import fastapi.routing
import httpx
import jwt
import pytest
from fastapi import FastAPI

from services.audit.api import FULL_PII_ROLES
from services.audit.app import build_api
from services.audit.projections import Projection, create_schema
from services.audit.refunds_api import QUEUES, Decide
from services.kit import envelope
from services.kit.auth import ISSUER, ROLES, issue_token
from services.kit.calendar import BusinessCalendar
from services.kit.envelope import RawMessage, SchemaRegistry
from services.kit.identity import with_check_digit
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from services.refunds.domain import visa_refund_id
from tests.conftest import TEST_SECRET, fresh_database
from tests.factories import IBAN_OTHER, IBAN_OWN

pytestmark = pytest.mark.integration

RULES = load_rules()
CALENDAR = BusinessCalendar.from_rules(RULES)
RIYADH_TIME = timezone(timedelta(hours=3))
# valid national IDs / iqama (Luhn check digit), as the services accept them
CITIZEN, PAYER, SPONSOR = with_check_digit("101234567"), with_check_digit("205551234"), with_check_digit("109876543")
EXPORT = "1448001234"
PII = (CITIZEN, PAYER, SPONSOR, IBAN_OWN, IBAN_OTHER)
VISA_AUTO, VISA_REVIEW = visa_refund_id(SPONSOR, EXPORT, "1"), visa_refund_id(SPONSOR, EXPORT, "2")


def riyadh(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A moment of November 2026 in Riyadh (1 November is a Sunday; no holidays that month)."""
    return datetime(2026, 11, day, hour, minute, second, tzinfo=RIYADH_TIME)


NOW = riyadh(9, 12)  # Monday noon: the API's clock


def masked(value: str) -> str:
    return "*" * (len(value) - 4) + value[-4:]


@cache
def schemas() -> SchemaRegistry:
    return SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas")


class Ledger:
    """The ledger topics as the services publish them, applied through the audit projection."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.projection = Projection(pool)
        self.messages: list[RawMessage] = []
        self.offsets: Counter[str] = Counter()
        self.payments: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, dict[str, Any]] = {}

    def emit(self, topic: str, event_type: str, time: datetime, data: dict[str, Any], key: str,
             subject: str) -> None:
        schemas().validate_data(event_type, data)  # only what the contract lets a service publish
        value = envelope.write(
            event_id=f"{uuid.uuid4()}:{len(self.messages) + 1}", source=f"refund-ledger/{topic.split('.')[1]}",
            event_type=event_type, time=time, data=data, subject=subject,
            extensions={"recordedat": (time + timedelta(seconds=2)).isoformat(), "sequence": str(self.offsets.total())})
        self.messages.append(RawMessage(topic, 0, self.offsets[topic], key.encode(), value))
        self.offsets[topic] += 1

    async def project(self) -> None:
        messages, self.messages = self.messages, []
        assert await self.projection.apply(messages) == len(messages)

    # ledger.payments
    def payment(self, payment_id: str, paid_at: datetime, *, beneficiary: str = CITIZEN, payer: str | None = None,
                iban: str = IBAN_OWN, agency: str = "JAWAZAT", service_code: str = "PASSPORT_ISSUE",
                amount: int = 30000, bill: str | None = None) -> None:
        facts = {"payment_id": payment_id, "beneficiary_id": beneficiary, "payer_id": payer or beneficiary,
                 "payer_iban": iban, "agency": agency, "service_code": service_code, "amount": amount,
                 "currency": "SAR", "channel": "SADAD_ONLINE", "paid_at": paid_at.isoformat(),
                 "third_party_payer": (payer or beneficiary) != beneficiary,
                 **({"sadad_bill_number": bill} if bill else {})}
        self.payments[payment_id] = facts
        self.emit("ledger.payments", "ledger.payment.recorded", paid_at,
                  {**facts, "origin": origin("bank/80", "payment.recorded")}, beneficiary, f"payment/{payment_id}")
        self.emit("ledger.payments", "ledger.balance.credited", paid_at, {
            **{k: facts[k] for k in ("beneficiary_id", "agency", "service_code", "payment_id", "amount")},
            "balance": {"credited": amount, "charged": 0, "held": 0, "refunded": 0, "available": amount},
            "balance_version": 1, "occurred_at": paid_at.isoformat(), "origin": origin("bank/80", "payment.recorded")},
            beneficiary, f"balance/{beneficiary}/{agency}/{service_code}")

    def acknowledged(self, payment_id: str, at: datetime) -> None:
        p = self.payments[payment_id]
        self.emit("ledger.payments", "ledger.payment.acknowledged", at, {
            "payment_id": payment_id, "beneficiary_id": p["beneficiary_id"], "acknowledged_at": at.isoformat(),
            "origin": origin("nic", "payment.acknowledged")}, p["beneficiary_id"], f"payment/{payment_id}")

    def unreflected(self, payment_id: str) -> None:
        p = self.payments[payment_id]
        due = datetime.fromisoformat(p["paid_at"]) + RULES.unreflected_payment_after
        self.emit("ledger.payments", "ledger.payment.unreflected", due, {
            **{k: p[k] for k in ("payment_id", "beneficiary_id", "agency", "service_code", "amount", "channel",
                                 "paid_at")}, "due_at": due.isoformat(), "rules_version": RULES.version},
            p["beneficiary_id"], f"payment/{payment_id}")

    def unreflected_resolved(self, payment_id: str, at: datetime) -> None:
        p = self.payments[payment_id]
        since = datetime.fromisoformat(p["paid_at"]) + RULES.unreflected_payment_after
        self.emit("ledger.payments", "ledger.payment.unreflected_resolved", at, {
            "payment_id": payment_id, "beneficiary_id": p["beneficiary_id"], "agency": p["agency"],
            "acknowledged_at": at.isoformat(), "unreflected_since": since.isoformat()},
            p["beneficiary_id"], f"payment/{payment_id}")

    # ledger.refunds
    def refund_requested(self, refund_id: str, requested_at: datetime, *, route: str = "BANK",
                         beneficiary: str = CITIZEN, iban: str = IBAN_OWN, agency: str = "JAWAZAT",
                         service_code: str = "PASSPORT_ISSUE", amount: int = 10000,
                         starts_at: datetime | None = None, reference: dict[str, str] | None = None) -> None:
        """The case the refunds service opens: state, owner and deadline from the route's rule."""
        state, channel, told_by = {"BANK": ("AWAITING_HOLD", "BANK", "bank/80"),
                                   "JAWAZAT": ("JAWAZAT_QUEUE", "ABSHER", "absher"),
                                   "MANUAL_REVIEW": ("MANUAL_REVIEW", "MUSANED", "musaned")
                                   }.get(route, ("ACCEPTED", "MUSANED", "musaned"))
        rule = RULES.route(route)
        case = {"refund_id": refund_id, "beneficiary_id": beneficiary, "agency": agency,
                "service_code": service_code, "amount": amount, "iban": iban, "channel": channel,
                "requested_at": requested_at.isoformat(), "route": route, "state": state,
                "deadline": CALENDAR.deadline(rule, starts_at or requested_at).isoformat(),
                "route_owner": rule.owner, "rules_version": RULES.version, "third_party_payer": False,
                "reference": reference or {"request_id": refund_id}}
        self.cases[refund_id] = case
        self.emit("ledger.refunds", "ledger.refund.requested", starts_at or requested_at,
                  {**case, "origin": origin(told_by, "refund.requested")}, beneficiary, f"refund/{refund_id}")

    def visa_refund(self, serial: str, route: str, requested_at: datetime, accepted_at: datetime,
                    payment_id: str = "SV-1") -> str:
        """A visa refund as it opens on Musaned's acceptance (ordered at once unless in manual review)."""
        refund_id = visa_refund_id(SPONSOR, EXPORT, serial)
        self.refund_requested(refund_id, requested_at, route=route, beneficiary=SPONSOR, agency="MUSANED",
                              service_code="VISA_FEE", amount=200000, starts_at=accepted_at,
                              reference={"sponsor_id": SPONSOR, "export_number": EXPORT, "serial_number": serial,
                                         "payment_id": payment_id})
        if route != "MANUAL_REVIEW":
            self.ordered(refund_id, accepted_at)
        return refund_id

    def _case_event(self, refund_id: str, event_type: str, at: datetime, data: dict[str, Any]) -> None:
        beneficiary = self.cases[refund_id]["beneficiary_id"]
        self.emit("ledger.refunds", event_type, at, {"refund_id": refund_id, "beneficiary_id": beneficiary, **data},
                  beneficiary, f"refund/{refund_id}")

    def ordered(self, refund_id: str, at: datetime, decided_by: str | None = None) -> None:
        case = self.cases[refund_id]
        by = ({"decided_by": decided_by, "origin": origin(decided_by.split(":")[0], "refund.approved")}
              if decided_by else {"origin": origin("refund-ledger/payments", "ledger.balance.held")})
        self._case_event(refund_id, "ledger.refund.ordered", at, {
            **{k: case[k] for k in ("amount", "iban", "route", "deadline")}, "ordered_at": at.isoformat(), **by})

    def completed(self, refund_id: str, at: datetime) -> None:
        case = self.cases[refund_id]
        self._case_event(refund_id, "ledger.refund.completed", at, {
            "bank_reference": f"ARB-{refund_id}", "amount": case["amount"], "completed_at": at.isoformat(),
            "on_time": at <= datetime.fromisoformat(case["deadline"]), "origin": origin("bank/80", "refund.completed")})

    def failed(self, refund_id: str, at: datetime) -> None:
        self._case_event(refund_id, "ledger.refund.failed", at, {
            "bank_reference": f"ARB-{refund_id}", "reason": "account closed", "failed_at": at.isoformat(),
            "origin": origin("bank/80", "refund.failed")})

    def rejected(self, refund_id: str, at: datetime) -> None:
        self._case_event(refund_id, "ledger.refund.rejected", at, {
            "rule": "iban_not_payer", "reason": "the refund IBAN did not pay for this service",
            "decided_by": "payments", "rejected_at": at.isoformat(),
            "origin": origin("refund-ledger/payments", "ledger.balance.hold_refused")})

    def overdue(self, refund_id: str, at: datetime) -> None:
        case = self.cases[refund_id]
        self._case_event(refund_id, "ledger.refund.overdue", at, {
            "agency": case["agency"], "route": case["route"], "state": "ORDERED", "owner": "BANK",
            "deadline": case["deadline"], "marked_at": at.isoformat()})

    # ledger.visas
    def visa_routed(self, serial: str, route: str, issued_at: datetime, requested_at: datetime) -> None:
        hours = (requested_at - issued_at).total_seconds() / 3600
        self.emit("ledger.visas", "ledger.visa.cancellation_routed", requested_at, {
            **visa(serial), "visa_type": "DOMESTIC_WORKER", "payment_id": f"SV-{serial}", "fee": 200000,
            "issued_at": issued_at.isoformat(), "requested_at": requested_at.isoformat(), "channel": "MUSANED",
            "route": route, "rule": "within_window" if route == "AUTOMATIC" else "after_window",
            "reason": f"cancellation requested {hours:.0f} h after issue", "rules_version": RULES.version,
            "hours_since_issue": hours, "seconds_since_issue": int(hours * 3600),
            "origin": origin("musaned", "visa.cancellation_requested")}, SPONSOR, visa_subject(serial))

    def visa_status(self, serial: str, status: str, at: datetime) -> None:
        self.emit("ledger.visas", "ledger.visa.status_changed", at, {
            **visa(serial), "status": status, "changed_at": at.isoformat(),
            "origin": origin("nic", "visa.status_changed")}, SPONSOR, visa_subject(serial))

    def status_mismatch(self, serial: str, changed_at: datetime, flagged_at: datetime) -> None:
        self.emit("ledger.refunds", "ledger.refund.status_mismatch", flagged_at, {
            "refund_id": visa_refund_id(SPONSOR, EXPORT, serial), **visa(serial), "status": "FEES_RESTORED",
            "status_changed_at": changed_at.isoformat(), "deadline": (flagged_at - timedelta(seconds=4)).isoformat(),
            "refund_state": None, "owner": "MUSANED", "flagged_at": flagged_at.isoformat()},
            SPONSOR, f"refund/V-{SPONSOR}-{EXPORT}-{serial}")


def origin(source: str, event_type: str) -> dict[str, str]:
    return {"source": source, "id": str(uuid.uuid4()), "type": event_type}


def visa(serial: str) -> dict[str, str]:
    return {"sponsor_id": SPONSOR, "export_number": EXPORT, "serial_number": serial}


def visa_subject(serial: str) -> str:
    return f"visa/{SPONSOR}/{EXPORT}/{serial}"


class Decisions:
    """Records what the API hands to ``decide`` and answers with a command id.

    ``decide`` is the audit service's boundary to Kafka (``AuditRuntime.decide``
    publishes the command on ``refund-decisions``); that real path, through the
    refunds service and back into the read model, is covered end to end by
    tests/e2e/test_refund_journeys.py. Here we check what the API decides to send.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, event_type: str, data: dict[str, Any]) -> str:
        self.sent.append((event_type, data))
        return f"decision-{len(self.sent)}"


def compose_api(pool_of: Callable[[], asyncpg.Pool | None], decide: Decide | None = None,
                clock: Callable[[], datetime] = lambda: NOW) -> FastAPI:
    """The audit API as services/audit/service.py composes it (with a fixed clock)."""
    return build_api(pool_of, TEST_SECRET, RULES, decide, lambda app: add_operational_routes(app, Health()), clock)


def client_for(api: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: a crash answers as it does under uvicorn (the app's own 500 response);
    # its traceback still shows in pytest's captured log.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api, raise_app_exceptions=False),
                             base_url="http://audit.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_role(role: str, subject: str | None = None) -> dict[str, str]:
    return bearer(issue_token(TEST_SECRET, role, subject or f"{role}:tester", 600))


#: Values for the path parameters; the masking test seeds a read model with exactly these.
PATH_VALUES = {"payment_id": "PAY-1", "beneficiary_id": CITIZEN, "refund_id": "RR-1", "sponsor_id": SPONSOR,
               "export_number": EXPORT, "serial_number": "3"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str               # the route template
    roles: frozenset[str]   # who may call it
    paginated: bool = False  # takes a cursor
    reads_model: bool = True  # needs the read model (its pool)

    @property
    def url(self) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m[1], "X1"), self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def roles_of(route: Any) -> frozenset[str]:
    """Who may call ``route``, from the code's own constants: a queue's readers or deciders, else READ_ROLES."""
    for queue in QUEUES:
        if route.path.startswith(f"/api/v1{queue.path}/"):
            return queue.readers if "GET" in route.methods else queue.deciders
    return importlib.import_module(route.endpoint.__module__).READ_ROLES


def endpoints(api: FastAPI) -> list[Endpoint]:
    """Every operation under /api/v1, from ``api.routes`` (FastAPI >= 0.16x keeps included routers nested)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", iter)
    def parameters(route: Any) -> set[str]:
        return set(inspect.signature(route.endpoint).parameters)

    return [Endpoint(method, route.path, roles_of(route), "cursor" in parameters(route), "db" in parameters(route))
            for route in flatten(api.routes)
            if (route.path or "").startswith("/api/v1/") for method in sorted(route.methods - {"HEAD"})]


ENDPOINTS = endpoints(compose_api(lambda: None))
LISTS = [e for e in ENDPOINTS if e.paginated]


#: Required query parameters of endpoints that have them.
QUERY_VALUES = {path: {"q": PATH_VALUES["payment_id"]} for path in ("/api/v1/search", "/api/v1/search.csv")}


async def call(client: httpx.AsyncClient, endpoint: Endpoint, headers: dict[str, str]) -> httpx.Response:
    body = {"reason": "the balance was already refunded"} if endpoint.method == "POST" else None
    return await client.request(endpoint.method, endpoint.url, headers=headers, json=body,
                                params=QUERY_VALUES.get(endpoint.path))


async def get(client: httpx.AsyncClient, url: str, role: str = "auditor", **params: Any) -> dict[str, Any]:
    response = await client.get(url, headers=as_role(role), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def refund_ids(page: dict[str, Any]) -> list[str]:
    return [item["refund_id"] for item in page["items"]]


@asynccontextmanager
async def read_model(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        await create_schema(pool)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pool(database_url):
    async with read_model(database_url) as pool:
        yield pool


@pytest.fixture
def ledger(pool) -> Ledger:
    return Ledger(pool)


@pytest.fixture
def decisions() -> Decisions:
    return Decisions()


@pytest.fixture
async def client(pool, decisions):
    async with client_for(compose_api(lambda: pool, decisions)) as client:
        yield client


# Read-only tests share one read model per dataset (a database each costs ~0.4 s): they never write.
@pytest.fixture(scope="module")
async def empty_pool(postgres):
    async with read_model(fresh_database(postgres)) as pool:
        yield pool


@pytest.fixture
async def empty_client(empty_pool):
    async with client_for(compose_api(lambda: empty_pool, Decisions())) as client:
        yield client


# -- auth -------------------------------------------------------------------------------------------------------


def invalid_credentials() -> dict[str, dict[str, str]]:
    now = datetime.now(timezone.utc)
    claims = {"iss": ISSUER, "sub": "intruder", "iat": now, "exp": now + timedelta(minutes=10)}
    return {
        "no token": {},
        "not a bearer token": {"Authorization": "Basic YXVkaXRvcjpzZWNyZXQ="},
        "malformed token": bearer("not.a.jwt"),
        "signed with another secret": bearer(issue_token("another-secret-" + "y" * 40, "admin", "intruder", 600)),
        "expired token": bearer(issue_token(TEST_SECRET, "admin", "late", 60, now=now - timedelta(hours=1))),
        "unknown role": bearer(jwt.encode({**claims, "role": "root"}, TEST_SECRET, algorithm="HS256")),
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_every_endpoint_answers_401_without_a_valid_token(endpoint, empty_client):
    answers = {}
    for problem, headers in invalid_credentials().items():
        response = await call(empty_client, endpoint, headers)
        answers[problem] = (response.status_code, "WWW-Authenticate" in response.headers)
    assert answers == dict.fromkeys(answers, (401, True))


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_every_endpoint_answers_403_to_a_role_that_may_not_use_it(endpoint, empty_client):
    assert endpoint.roles and endpoint.roles <= set(ROLES)
    answers = {role: (await call(empty_client, endpoint, as_role(role))).status_code for role in ROLES}
    refused = {role for role, status in answers.items() if status in (401, 403)}
    assert refused == set(ROLES) - endpoint.roles, answers
    assert all(answers[role] == 403 for role in refused), answers


# -- masking ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def people(postgres):
    """A read model naming people in every view, under the ids of PATH_VALUES."""
    async with read_model(fresh_database(postgres)) as pool:
        ledger = Ledger(pool)
        ledger.payment("PAY-1", riyadh(1, 9, 30), payer=PAYER, iban=IBAN_OTHER)  # a relative paid
        ledger.unreflected("PAY-1")
        ledger.refund_requested("RR-1", riyadh(2, 10))
        ledger.ordered("RR-1", riyadh(2, 10, 0, 1))
        ledger.refund_requested("AB-1", riyadh(3, 11), route="JAWAZAT", iban=IBAN_OTHER)
        ledger.visa_status("3", "FEES_RESTORED", riyadh(3, 14, 20))  # fees restored on paper, no refund case
        ledger.status_mismatch("3", riyadh(3, 14, 20), riyadh(19, 0, 0, 3))
        await ledger.project()
        yield pool


@pytest.mark.parametrize("role", ROLES)
async def test_ibans_and_ids_are_masked_for_roles_without_pii_rights(role, people):
    async with client_for(compose_api(lambda: people)) as client:
        bodies = {}
        for endpoint in (e for e in ENDPOINTS if e.method == "GET" and role in e.roles):
            response = await client.get(endpoint.url, headers=as_role(role), params=QUERY_VALUES.get(endpoint.path))
            assert response.status_code == 200, (str(endpoint), response.text)
            csv_export = response.headers["content-type"].startswith("text/csv")  # checked as text below
            bodies[endpoint.path] = response.text if csv_export else response.json()
            if role not in FULL_PII_ROLES:
                assert [v for v in PII if v in response.text] == [], f"{endpoint} shows them to {role}"

    shown = (lambda value: value) if role in FULL_PII_ROLES else masked
    payment = bodies["/api/v1/payments/{payment_id}"]
    assert (payment["beneficiary_id"], payment["payer_id"], payment["payer_iban"]) == (
        shown(CITIZEN), shown(PAYER), shown(IBAN_OTHER))
    refund = bodies["/api/v1/refunds/{refund_id}"]
    assert (refund["beneficiary_id"], refund["iban"]) == (shown(CITIZEN), shown(IBAN_OWN))
    assert bodies["/api/v1/visas/{sponsor_id}/{export_number}/{serial_number}"]["sponsor_id"] == shown(SPONSOR)
    assert bodies["/api/v1/beneficiaries/{beneficiary_id}/balances"]["beneficiary_id"] == shown(CITIZEN)
    assert [(i["refund_id"], i["beneficiary_id"], i["iban"]) for i in bodies["/api/v1/refunds"]["items"]] == [
        ("AB-1", shown(CITIZEN), shown(IBAN_OTHER)), ("RR-1", shown(CITIZEN), shown(IBAN_OWN))]
    assert [i["beneficiary_id"] for i in bodies["/api/v1/payments/unreflected"]["items"]] == [shown(CITIZEN)]
    assert [i["sponsor_id"] for i in bodies["/api/v1/visas/status-mismatches"]["items"]] == [shown(SPONSOR)]
    if "/api/v1/jawazat/queue" in bodies:
        assert [i["iban"] for i in bodies["/api/v1/jawazat/queue"]["items"]] == [shown(IBAN_OTHER)]


async def test_an_agent_sees_the_sponsor_masked_in_a_visa_refund_reference(ledger, client):
    # INTERFACES.md: "Every response that names a person masks payer IBAN and IDs except for roles allowed
    # to see them"; a visa refund's reference names its sponsor (the case view masks the same ID elsewhere).
    ledger.visa_refund("1", "AUTOMATIC", riyadh(2, 9), riyadh(2, 12))
    await ledger.project()
    case = await get(client, f"/api/v1/refunds/{VISA_AUTO}", "agent")
    assert case["beneficiary_id"] == masked(SPONSOR)
    assert case["reference"]["sponsor_id"] == masked(SPONSOR)


# -- the refunds list -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def cases(postgres):
    """Eight cases across routes, states and agencies; NOW is Monday 9 November, noon in Riyadh."""
    async with read_model(fresh_database(postgres)) as pool:
        ledger = Ledger(pool)
        seed_cases(ledger)
        await ledger.project()
        yield pool


@pytest.fixture
async def cases_client(cases):
    async with client_for(compose_api(lambda: cases)) as client:
        yield client


def seed_cases(ledger: Ledger) -> None:
    ledger.refund_requested("RR-DONE", riyadh(2, 10))
    ledger.ordered("RR-DONE", riyadh(2, 10, 0, 1))
    ledger.completed("RR-DONE", riyadh(3, 13))
    ledger.refund_requested("RR-LATE", riyadh(2, 11))
    ledger.ordered("RR-LATE", riyadh(2, 11, 0, 1))
    ledger.overdue("RR-LATE", riyadh(6, 0, 0, 4))
    ledger.completed("RR-LATE", riyadh(8, 9))
    ledger.refund_requested("RR-OPEN", datetime(2026, 11, 2, 21, 30, tzinfo=timezone.utc))  # Tuesday 00:30 Riyadh
    ledger.ordered("RR-OPEN", datetime(2026, 11, 2, 21, 30, 1, tzinfo=timezone.utc))
    ledger.overdue("RR-OPEN", riyadh(9, 0, 0, 4))
    ledger.refund_requested("RR-REFUSED", riyadh(4, 10), iban=IBAN_OTHER)
    ledger.rejected("RR-REFUSED", riyadh(4, 10, 0, 1))
    ledger.refund_requested("RR-FAILED", riyadh(5))
    ledger.ordered("RR-FAILED", riyadh(5, 0, 0, 1))
    ledger.failed("RR-FAILED", riyadh(6, 11))
    ledger.visa_refund("1", "AUTOMATIC", riyadh(5, 9), riyadh(5, 12))
    ledger.visa_refund("2", "MANUAL_REVIEW", riyadh(6, 8), riyadh(6, 9))
    ledger.refund_requested("AB-1", riyadh(8, 15), route="JAWAZAT", iban=IBAN_OTHER)


NEWEST_FIRST = ["AB-1", VISA_REVIEW, VISA_AUTO, "RR-FAILED", "RR-REFUSED", "RR-OPEN", "RR-LATE", "RR-DONE"]


@pytest.mark.parametrize(("query", "expected"), [
    ({}, NEWEST_FIRST),
    ({"status": "open"}, ["AB-1", VISA_REVIEW, VISA_AUTO, "RR-OPEN"]),
    ({"status": "overdue"}, ["RR-OPEN"]),  # RR-LATE went overdue but is closed
    ({"status": "COMPLETED"}, ["RR-LATE", "RR-DONE"]),
    ({"status": "JAWAZAT_QUEUE"}, ["AB-1"]),
    ({"route": "AUTOMATIC"}, [VISA_AUTO]),
    ({"route": "BANK"}, ["RR-FAILED", "RR-REFUSED", "RR-OPEN", "RR-LATE", "RR-DONE"]),
    ({"agency": "MUSANED"}, [VISA_REVIEW, VISA_AUTO]),
    ({"from": "2026-11-03T00:00:00+03:00", "to": "2026-11-05T00:00:00+03:00"}, ["RR-REFUSED", "RR-OPEN"]),
    ({"from": "2026-11-02T21:00:00Z", "to": "2026-11-04T21:00:00Z"}, ["RR-REFUSED", "RR-OPEN"]),
    ({"status": "COMPLETED", "route": "BANK", "agency": "JAWAZAT", "from": "2026-11-02T10:30:00+03:00"},
     ["RR-LATE"]),
], ids=lambda value: "&".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None)
async def test_the_refunds_list_filters_and_sorts_newest_request_first(query, expected, cases_client):
    assert refund_ids(await get(cases_client, "/api/v1/refunds", **query)) == expected


@pytest.mark.parametrize("query", [{"from": "2026-11-03T00:00:00"}, {"to": "2026-11-05T00:00:00"},
                                   {"status": "LOST"}, {"route": "POST_OFFICE"}, {"agency": "jawazat"},
                                   {"limit": "0"}, {"limit": "501"}], ids=str)
async def test_the_refunds_list_refuses_a_malformed_filter(query, empty_client):
    response = await empty_client.get("/api/v1/refunds", headers=as_role("auditor"), params=query)
    assert response.status_code == 422, response.text


async def test_refund_pages_return_every_case_exactly_once_newest_first(ledger, client):
    start = riyadh(2, 9) + timedelta(microseconds=123456)
    requested = {f"RR-{n:03d}": start + timedelta(minutes=7 * (n // 3)) for n in range(130)}  # threes share a time
    for refund_id in random.Random(7).sample(sorted(requested), len(requested)):
        ledger.refund_requested(refund_id, requested[refund_id])
    await ledger.project()

    pages, cursor = [], None
    while len(pages) < 5:
        page = await get(client, "/api/v1/refunds", limit=50, **({"cursor": cursor} if cursor else {}))
        pages.append(refund_ids(page))
        if (cursor := page["next_cursor"]) is None:
            break
    assert [len(page) for page in pages] == [50, 50, 30]
    assert [refund_id for page in pages for refund_id in page] == sorted(
        requested, key=lambda r: (requested[r], r), reverse=True)


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "%%not-a-cursor%%",
    encoded("garbage"),
    encoded('["yesterday", "RR-1"]'),
    encoded('["2026-11-02T10:00:00+03:00"]'),
    encoded('{"requested_at": "2026-11-02T10:00:00+03:00", "refund_id": "RR-1"}'),  # edited by hand
], ids=["not base64", "not JSON", "not a time", "one value", "a JSON object"])
async def test_every_list_refuses_a_tampered_cursor(cursor, empty_client):
    answers = {}
    for endpoint in LISTS:
        response = await empty_client.get(endpoint.url, headers=as_role("admin"), params={"cursor": cursor})
        answers[str(endpoint)] = (response.status_code, response.json())
    assert answers == dict.fromkeys(answers, (422, {"detail": "cursor is not one this API issued"}))


# -- one refund case --------------------------------------------------------------------------------------------


async def test_an_unknown_refund_is_404(client):
    response = await client.get("/api/v1/refunds/RR-NOPE", headers=as_role("auditor"))
    assert (response.status_code, response.json()) == (404, {"detail": "refund RR-NOPE is not in the ledger"})


def sla(deadline: str, status: str, elapsed: int) -> dict[str, Any]:
    return {"deadline": deadline, "status": status, "business_days_elapsed": elapsed}


async def test_the_sla_is_met_missed_or_overdue_by_the_deadline_in_riyadh_time(cases, cases_client):
    thursday, sunday = "2026-11-05T23:59:59.999999+03:00", "2026-11-08T23:59:59.999999+03:00"
    expected = {
        "RR-DONE": sla(thursday, "MET", 1),        # asked Monday, paid Tuesday
        "RR-LATE": sla(thursday, "MISSED", 4),     # paid the next Sunday
        "RR-OPEN": sla(sunday, "OVERDUE", 4),      # asked Tuesday 00:30 Riyadh (Monday in UTC), still ordered
        "RR-REFUSED": sla("2026-11-09T23:59:59.999999+03:00", "CLOSED", 0),
        "RR-FAILED": sla("2026-11-10T23:59:59.999999+03:00", "CLOSED", 0),  # failed on Friday
        VISA_AUTO: sla("2026-11-10T23:59:59.999999+03:00", "ON_TIME", 2),   # from Musaned's Thursday acceptance
        VISA_REVIEW: sla("2026-11-21T23:59:59.999999+03:00", "ON_TIME", 2),  # 15 calendar days
        "AB-1": sla("2026-11-11T23:59:59.999999+03:00", "ON_TIME", 1),
    }
    listed = (await get(cases_client, "/api/v1/refunds"))["items"]
    assert {item["refund_id"]: item["sla"] for item in listed} == expected
    for refund_id in ("RR-DONE", "RR-LATE", "RR-OPEN"):
        assert (await get(cases_client, f"/api/v1/refunds/{refund_id}"))["sla"] == expected[refund_id]

    async with client_for(compose_api(lambda: cases, clock=lambda: riyadh(8, 12))) as sunday_noon:
        assert (await get(sunday_noon, "/api/v1/refunds/RR-OPEN"))["sla"] == sla(sunday, "DUE_SOON", 3)


async def test_a_case_shows_its_audit_facts_timeline_and_hours_held_by_each_agency(ledger, client):
    ledger.refund_requested("AB-2", riyadh(2, 10), route="JAWAZAT", iban=IBAN_OTHER)
    ledger.ordered("AB-2", riyadh(3, 16, 30), decided_by="jawazat:e.alharbi")
    ledger.completed("AB-2", riyadh(4, 10))
    mofa = ledger.visa_refund("4", "MOFA", riyadh(1, 8), riyadh(1, 10))
    await ledger.project()

    case = await get(client, "/api/v1/refunds/AB-2")
    assert case["time_by_agency"] == {"JAWAZAT": 30.5, "BANK": 17.5}
    assert sum(case["time_by_agency"].values()) == 48.0  # request to completion
    assert {k: case[k] for k in ("state", "route", "route_owner", "channel", "decided_by", "decided_at", "ordered_at",
                                 "completed_at", "bank_reference", "next_step_owner", "bank_name")} == {
        "state": "COMPLETED", "route": "JAWAZAT", "route_owner": "JAWAZAT", "channel": "ABSHER",
        "decided_by": "jawazat:e.alharbi", "decided_at": "2026-11-03T16:30:00+03:00",
        "ordered_at": "2026-11-03T16:30:00+03:00", "completed_at": "2026-11-04T10:00:00+03:00",
        "bank_reference": "ARB-AB-2", "next_step_owner": None, "bank_name": "Riyad Bank"}
    assert [(e["type"], e["source"], e["time"], e["recorded_at"]) for e in case["timeline"]] == [
        ("ledger.refund.requested", "absher", "2026-11-02T10:00:00+03:00", "2026-11-02T10:00:02+03:00"),
        ("ledger.refund.ordered", "jawazat", "2026-11-03T16:30:00+03:00", "2026-11-03T16:30:02+03:00"),
        ("ledger.refund.completed", "bank/80", "2026-11-04T10:00:00+03:00", "2026-11-04T10:00:02+03:00")]

    open_case = await get(client, f"/api/v1/refunds/{mofa}")
    assert open_case["time_by_agency"] == {"MUSANED": 2.0, "MOFA": 194.0}  # held by MoFA until the clock's now
    assert sum(open_case["time_by_agency"].values()) == (NOW - riyadh(1, 8)).total_seconds() / 3600
    assert open_case["next_step_owner"] == "MOFA"  # MoFA pays the refunds routed to it, as the domain says


# -- payments ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def refunded_visa_fee(ledger):
    """A visa fee paid, acknowledged, and refunded after Musaned accepted the cancellation."""
    ledger.payment("SV-1", riyadh(1, 7), beneficiary=SPONSOR, agency="MUSANED", service_code="VISA_FEE",
                   amount=200000)
    ledger.acknowledged("SV-1", riyadh(1, 7, 5))
    ledger.visa_refund("1", "AUTOMATIC", riyadh(2, 9), riyadh(2, 12), payment_id="SV-1")
    ledger.completed(VISA_AUTO, riyadh(3, 13))
    await ledger.project()


async def test_a_payment_case_shows_when_and_how_it_was_paid_with_its_timeline(refunded_visa_fee, client):
    case = await get(client, "/api/v1/payments/SV-1")
    assert {k: case[k] for k in ("paid_at", "channel", "amount", "currency", "bank", "acknowledged_at",
                                 "third_party_payer", "recorded_at")} == {
        "paid_at": "2026-11-01T07:00:00+03:00", "channel": "SADAD_ONLINE", "amount": 200000, "currency": "SAR",
        "bank": {"code": "80", "name": "Al Rajhi Bank"}, "acknowledged_at": "2026-11-01T07:05:00+03:00",
        "third_party_payer": False, "recorded_at": "2026-11-01T07:00:02+03:00"}
    timeline = [(e["time"], e["type"], e["source"]) for e in case["timeline"]]
    assert timeline == sorted(timeline, key=lambda entry: entry[0])  # the credit and the payment share a time
    assert sorted(timeline) == [
        ("2026-11-01T07:00:00+03:00", "ledger.balance.credited", "bank/80"),
        ("2026-11-01T07:00:00+03:00", "ledger.payment.recorded", "bank/80"),
        ("2026-11-01T07:05:00+03:00", "ledger.payment.acknowledged", "nic")]


async def test_a_payment_case_shows_the_refund_of_its_fee(refunded_visa_fee, client):
    # INTERFACES.md: "GET /api/v1/payments/{payment_id}: the payment and everything that followed: ...
    # refund state, refunded_at". The fee was refunded in full (refund case reference.payment_id = SV-1).
    case = await get(client, "/api/v1/payments/SV-1")
    assert (case["refund_state"], case["refunded_at"]) == ("COMPLETED", "2026-11-03T13:00:00+03:00")


async def test_the_unreflected_list_shows_payments_no_agency_acknowledged_oldest_first(ledger, client):
    ledger.payment("P-JAWAZAT", riyadh(1, 9, 30))
    ledger.payment("P-MUSANED", riyadh(1, 8), agency="MUSANED", service_code="VISA_FEE")
    ledger.payment("P-ACKED", riyadh(1, 7))
    ledger.payment("P-LATE-ACK", riyadh(1, 6))
    for payment_id in ("P-JAWAZAT", "P-MUSANED", "P-LATE-ACK"):
        ledger.unreflected(payment_id)
    ledger.acknowledged("P-ACKED", riyadh(1, 7, 5))
    ledger.acknowledged("P-LATE-ACK", riyadh(3, 9))
    ledger.unreflected_resolved("P-LATE-ACK", riyadh(3, 9))
    await ledger.project()

    items = (await get(client, "/api/v1/payments/unreflected"))["items"]
    assert [(i["payment_id"], i["responsible_agency"], i["paid_at"], i["unreflected_since"]) for i in items] == [
        ("P-MUSANED", "MUSANED", "2026-11-01T08:00:00+03:00", "2026-11-02T08:00:00+03:00"),
        ("P-JAWAZAT", "JAWAZAT", "2026-11-01T09:30:00+03:00", "2026-11-02T09:30:00+03:00")]
    assert [i["payment_id"] for i in (await get(client, "/api/v1/payments/unreflected", agency="JAWAZAT"))["items"]
            ] == ["P-JAWAZAT"]
    first = await get(client, "/api/v1/payments/unreflected", limit=1)
    second = await get(client, "/api/v1/payments/unreflected", limit=1, cursor=first["next_cursor"])
    assert ([i["payment_id"] for i in first["items"] + second["items"]], second["next_cursor"]) == (
        ["P-MUSANED", "P-JAWAZAT"], None)


# -- visas ------------------------------------------------------------------------------------------------------


async def test_the_status_mismatch_list_shows_flagged_visas_oldest_flag_first(ledger, client):
    ledger.visa_routed("1", "AUTOMATIC", riyadh(1, 8), riyadh(1, 12))
    ledger.visa_status("1", "FEES_RESTORED", riyadh(3, 14, 20))
    ledger.status_mismatch("1", riyadh(3, 14, 20), riyadh(9, 0, 0, 3))
    ledger.visa_routed("2", "MOFA", riyadh(1, 8), riyadh(4, 12))
    ledger.visa_status("2", "FEES_RESTORED", riyadh(2, 9))
    ledger.status_mismatch("2", riyadh(2, 9), riyadh(7, 0, 0, 3))
    ledger.visa_status("3", "FEES_RESTORED", riyadh(3, 9))  # watched, not (yet) flagged
    ledger.visa_status("4", "CANCELLED", riyadh(3, 9))
    await ledger.project()

    page = await get(client, "/api/v1/visas/status-mismatches")
    assert page == {"next_cursor": None, "items": [
        {**visa("2"), "status": "FEES_RESTORED", "status_changed_at": "2026-11-02T09:00:00+03:00",
         "flagged_at": "2026-11-07T00:00:03+03:00", "route": "MOFA"},
        {**visa("1"), "status": "FEES_RESTORED", "status_changed_at": "2026-11-03T14:20:00+03:00",
         "flagged_at": "2026-11-09T00:00:03+03:00", "route": "AUTOMATIC"}]}
    first = await get(client, "/api/v1/visas/status-mismatches", limit=1)
    second = await get(client, "/api/v1/visas/status-mismatches", limit=1, cursor=first["next_cursor"])
    assert [i["serial_number"] for i in first["items"] + second["items"]] == ["2", "1"]


# -- the Jawazat and MoFA queues --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def queued(postgres):
    """Refunds waiting in each queue, and some that are not (read-only: decisions go to ``decide``)."""
    async with read_model(fresh_database(postgres)) as pool:
        ledger = Ledger(pool)
        ledger.refund_requested("AB-2", riyadh(3, 9), route="JAWAZAT", iban=IBAN_OTHER)
        ledger.refund_requested("AB-1", riyadh(2, 9), route="JAWAZAT", iban=IBAN_OTHER)
        ledger.refund_requested("AB-3", riyadh(1, 9), route="JAWAZAT", iban=IBAN_OTHER)
        ledger.ordered("AB-3", riyadh(2, 12), decided_by="jawazat:e.alharbi")  # decided: out of the queue
        ledger.visa_refund("2", "MANUAL_REVIEW", riyadh(4, 8), riyadh(4, 9))
        ledger.visa_refund("1", "AUTOMATIC", riyadh(4, 8), riyadh(4, 9))
        ledger.refund_requested("RR-1", riyadh(2, 10))  # awaiting its hold: in no queue
        await ledger.project()
        yield pool


@pytest.fixture
async def queue_client(queued, decisions):
    async with client_for(compose_api(lambda: queued, decisions)) as client:
        yield client


async def test_each_queue_lists_only_its_waiting_refunds_oldest_first(queue_client):
    jawazat = await get(queue_client, "/api/v1/jawazat/queue", "jawazat")
    assert (refund_ids(jawazat), [i["state"] for i in jawazat["items"]]) == (["AB-1", "AB-2"], ["JAWAZAT_QUEUE"] * 2)
    assert [i["next_step_owner"] for i in jawazat["items"]] == ["JAWAZAT", "JAWAZAT"]
    reviews = await get(queue_client, "/api/v1/reviews/queue", "mofa")
    assert (refund_ids(reviews), reviews["next_cursor"]) == ([VISA_REVIEW], None)
    first = await get(queue_client, "/api/v1/jawazat/queue", "jawazat", limit=1)
    second = await get(queue_client, "/api/v1/jawazat/queue", "jawazat", limit=1, cursor=first["next_cursor"])
    assert (refund_ids(first) + refund_ids(second), second["next_cursor"]) == (["AB-1", "AB-2"], None)


async def test_a_decision_is_accepted_and_handed_on_with_the_employee_and_queue(decisions, queue_client):
    reason = {"reason": "the balance was already refunded"}
    jawazat, mofa = as_role("jawazat", "jawazat:e.alharbi"), as_role("mofa", "mofa:s.alqahtani")
    answers = [
        await queue_client.post("/api/v1/jawazat/refunds/AB-1/approve", headers=jawazat),
        await queue_client.post("/api/v1/jawazat/refunds/AB-2/reject", headers=jawazat, json=reason),
        await queue_client.post(f"/api/v1/reviews/refunds/{VISA_REVIEW}/approve", headers=mofa),
        await queue_client.post(f"/api/v1/reviews/refunds/{VISA_REVIEW}/reject", headers=mofa, json=reason),
    ]
    assert [(a.status_code, a.json()) for a in answers] == [
        (202, {"refund_id": "AB-1", "decision": "approved", "command_id": "decision-1",
               "second_approval_needed": False}),
        (202, {"refund_id": "AB-2", "decision": "declined", "command_id": "decision-2",
               "second_approval_needed": False}),
        (202, {"refund_id": VISA_REVIEW, "decision": "approved", "command_id": "decision-3",
               "second_approval_needed": False}),
        (202, {"refund_id": VISA_REVIEW, "decision": "declined", "command_id": "decision-4",
               "second_approval_needed": False})]
    at = "2026-11-09T12:00:00+03:00"
    assert decisions.sent == [
        ("refund.approved", {"refund_id": "AB-1", "queue": "JAWAZAT_QUEUE", "decided_by": "jawazat:e.alharbi",
                             "decided_at": at}),
        ("refund.declined", {"refund_id": "AB-2", "queue": "JAWAZAT_QUEUE", "decided_by": "jawazat:e.alharbi",
                             "decided_at": at, **reason}),
        ("refund.approved", {"refund_id": VISA_REVIEW, "queue": "MANUAL_REVIEW", "decided_by": "mofa:s.alqahtani",
                             "decided_at": at}),
        ("refund.declined", {"refund_id": VISA_REVIEW, "queue": "MANUAL_REVIEW", "decided_by": "mofa:s.alqahtani",
                             "decided_at": at, **reason})]
    for event_type, data in decisions.sent:  # what the refunds service will accept on refund-decisions
        schemas().validate_data(event_type, data)


@pytest.mark.parametrize(("role", "url", "body", "status"), [
    ("jawazat", f"/api/v1/jawazat/refunds/{VISA_REVIEW}/approve", None, 409),  # in MoFA's queue
    ("mofa", "/api/v1/reviews/refunds/AB-1/approve", None, 409),               # in Jawazat's queue
    ("jawazat", "/api/v1/jawazat/refunds/AB-3/approve", None, 409),            # already ordered
    ("jawazat", "/api/v1/jawazat/refunds/RR-1/reject", {"reason": "not ours"}, 409),  # awaiting its hold
    ("mofa", f"/api/v1/reviews/refunds/{VISA_AUTO}/reject", {"reason": "late"}, 409),  # automatic, ordered
    ("jawazat", "/api/v1/jawazat/refunds/AB-404/approve", None, 404),
    ("mofa", "/api/v1/reviews/refunds/V-404/reject", {"reason": "unknown visa"}, 404),
    ("jawazat", "/api/v1/jawazat/refunds/AB-1/reject", {"reason": "no"}, 422),
    ("jawazat", "/api/v1/jawazat/refunds/AB-1/reject", {"reason": "x" * 501}, 422),
    ("jawazat", "/api/v1/jawazat/refunds/AB-1/reject", None, 422),
    ("jawazat", "/api/v1/jawazat/refunds/AB 1/approve", None, 422),
], ids=lambda value: str(value)[-40:] if isinstance(value, str) else None)
async def test_a_decision_that_cannot_apply_is_refused_and_never_sent(role, url, body, status, decisions,
                                                                       queue_client):
    response = await queue_client.post(url, headers=as_role(role), json=body)
    assert response.status_code == status, response.text
    assert decisions.sent == []


# -- errors -----------------------------------------------------------------------------------------------------


async def test_an_internal_error_answers_500_without_internals(database_url):
    closed = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    await closed.close()
    async with client_for(compose_api(lambda: closed, Decisions())) as client:
        answers = {str(e): await call(client, e, as_role(min(e.roles))) for e in ENDPOINTS if e.reads_model}
    assert {k: (r.status_code, r.json()) for k, r in answers.items()} == dict.fromkeys(
        answers, (500, {"detail": "internal error"}))
    assert not any("Traceback" in r.text or "asyncpg" in r.text for r in answers.values())


async def test_without_a_read_model_or_a_decision_channel_the_api_answers_503(pool):
    async with client_for(compose_api(lambda: None, Decisions())) as client:
        answers = {str(e): await call(client, e, as_role(min(e.roles))) for e in ENDPOINTS if e.reads_model}
    assert {k: (r.status_code, r.json()) for k, r in answers.items()} == dict.fromkeys(
        answers, (503, {"detail": "the read model is not connected yet"}))
    async with client_for(compose_api(lambda: pool, decide=None)) as client:
        posts = [e for e in ENDPOINTS if e.method == "POST"]
        answers = {str(e): await call(client, e, as_role(min(e.roles))) for e in posts}
    assert posts and {k: (r.status_code, r.json()) for k, r in answers.items()} == dict.fromkeys(
        answers, (503, {"detail": "decisions cannot be sent right now"}))


# -- OpenAPI ----------------------------------------------------------------------------------------------------


CONTRACT = {  # INTERFACES.md, "Audit API"
    ("GET", "/api/v1/payments/{payment_id}"), ("GET", "/api/v1/visas/{sponsor_id}/{export_number}/{serial_number}"),
    ("GET", "/api/v1/beneficiaries/{beneficiary_id}/balances"), ("GET", "/api/v1/refunds"),
    ("GET", "/api/v1/payments/unreflected"), ("GET", "/api/v1/jawazat/queue"),
    ("POST", "/api/v1/jawazat/refunds/{refund_id}/approve"), ("POST", "/api/v1/jawazat/refunds/{refund_id}/reject"),
}


async def test_the_openapi_document_lists_every_route_with_its_auth_answers(empty_client):
    response = await empty_client.get("/openapi.json")  # the contract itself needs no token
    assert response.status_code == 200
    paths = response.json()["paths"]
    documented = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    routed = {(e.method, e.path) for e in ENDPOINTS}
    assert routed >= CONTRACT
    assert {d for d in documented if d[1].startswith("/api/v1/")} == routed
    for endpoint in ENDPOINTS:
        operation = paths[endpoint.path][endpoint.method.lower()]
        assert {"401", "403", "422"} <= set(operation["responses"]), endpoint
        assert operation["security"] == [{"HTTPBearer": []}], endpoint
