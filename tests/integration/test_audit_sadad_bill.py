"""The SADAD bill number a citizen reads off the bill: sent on ``payment.recorded``, carried by the
payments service to ``ledger.payment.recorded``, projected, and found by the audit search box.
Real PostgreSQL; the services' CloudEvents carried between ingresses as Kafka would."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from itertools import islice

import asyncpg
import httpx
import pytest

from services.audit.app import build_api
from services.audit.projections import Projection, create_schema
from services.cli.simulate import Scenario
from services.kit.auth import issue_token
from services.kit.envelope import RawMessage
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from tests.conftest import TEST_SECRET
from tests.factories import cloudevent, payment
from tests.integration.test_refund_saga import saga  # noqa: F401 - the saga fixture

pytestmark = pytest.mark.integration

BILL = "7700000000123456"
TEN_DIGIT_BILL = "1000000017"  # reads like a national ID: the search tries both


async def test_a_payment_is_found_by_its_sadad_bill_number(saga, db_settings):  # noqa: F811
    saga.pay.feed("payments", [
        cloudevent("payment.recorded", {**payment("PAY-B1"), "sadad_bill_number": BILL}),
        cloudevent("payment.recorded", {**payment("PAY-B2"), "sadad_bill_number": TEN_DIGIT_BILL}),
        cloudevent("payment.recorded", payment("PAY-B3")),  # no bill number: still valid
    ])
    saga.settle()
    recorded = [e for e in saga.ledger if e["type"] == "ledger.payment.recorded"]
    for event in recorded:
        saga.registry.validate_data("ledger.payment.recorded", event["data"])
    assert [e["data"].get("sadad_bill_number") for e in recorded] == [BILL, TEN_DIGIT_BILL, None]

    pool = await asyncpg.create_pool(db_settings.database_url, min_size=1, max_size=4)
    try:
        await create_schema(pool)
        await Projection(pool).apply([RawMessage("ledger.payments", 0, i, b"k", json.dumps(e).encode())
                                      for i, e in enumerate(saga.ledger) if e["type"].startswith("ledger.")])
        api = build_api(lambda: pool, TEST_SECRET, load_rules(), None,
                        lambda app: add_operational_routes(app, Health()))
        headers = {"Authorization": f"Bearer {issue_token(TEST_SECRET, 'agent', 'agent:n.alotaibi', 600)}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://audit.test") as http:
            by_bill = (await http.get("/api/v1/search", params={"q": BILL}, headers=headers)).json()
            by_short = (await http.get("/api/v1/search", params={"q": TEN_DIGIT_BILL}, headers=headers)).json()
            case = (await http.get("/api/v1/payments/PAY-B1", headers=headers)).json()
    finally:
        await pool.close()
    assert [(h["kind"], h["key"]) for h in by_bill["items"]] == [("payment", "PAY-B1")]
    assert ("payment", "PAY-B2") in [(h["kind"], h["key"]) for h in by_short["items"]]
    assert case["sadad_bill_number"] == BILL


def test_the_simulator_quotes_a_bill_number_on_every_sadad_payment():
    start = datetime(2026, 11, 9, 9, tzinfo=timezone.utc)
    payments = [json.loads(r.value) for r in islice(Scenario(seed=7).events(start=start), 400)
                if r.topic == "payments"]
    recorded = [p["data"] for p in payments if p["type"] == "payment.recorded"]
    sadad = [d for d in recorded if d["channel"].startswith("SADAD_")]
    assert sadad and all(d["sadad_bill_number"].isdigit() for d in sadad)
    assert len({d["sadad_bill_number"] for d in sadad}) == len(sadad), "one bill, one number"
    assert all("sadad_bill_number" not in d for d in recorded if not d["channel"].startswith("SADAD_"))
