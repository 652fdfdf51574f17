"""The aggregates behind the console's charts: refunds by status and route per Riyadh day / week,
and SLA compliance per agency owning the route. Read model loaded from ledger events."""

from __future__ import annotations

import pytest

from tests.integration.test_audit_api import Ledger, as_role, client_for, compose_api, get, riyadh
from tests.integration.test_audit_api import pool as pool  # noqa: PLC0414 - the fixture

pytestmark = pytest.mark.integration

NOVEMBER = {"from": "2026-11-01T00:00:00+03:00", "to": "2026-11-10T00:00:00+03:00"}


@pytest.fixture
async def stats_client(pool):
    ledger = Ledger(pool)
    ledger.refund_requested("RR-1", riyadh(2, 10))                        # paid on time
    ledger.ordered("RR-1", riyadh(2, 10, 1))
    ledger.completed("RR-1", riyadh(3, 9))
    ledger.refund_requested("RR-2", riyadh(2, 11))                        # paid after its deadline (5 Nov)
    ledger.ordered("RR-2", riyadh(2, 11, 1))
    ledger.completed("RR-2", riyadh(6, 9))
    ledger.refund_requested("RR-3", riyadh(2, 1))                         # 1 Nov in UTC, 2 Nov in Riyadh; overdue
    ledger.refund_requested("AB-1", riyadh(3, 9), route="JAWAZAT")        # waiting past its deadline
    ledger.refund_requested("AB-2", riyadh(9, 9), route="JAWAZAT")        # waiting, on time
    ledger.visa_refund("1", "AUTOMATIC", riyadh(4, 9), riyadh(4, 10))     # ordered, on time (Musaned's SLA)
    ledger.refund_requested("RR-OLD", riyadh(1, 0).replace(month=10))    # outside the window
    await ledger.project()
    async with client_for(compose_api(lambda: pool)) as client:
        yield client


async def test_refunds_are_counted_per_riyadh_day_by_state_and_route(stats_client):
    body = await get(stats_client, "/api/v1/stats/refunds", "agent", **NOVEMBER)
    assert body["bucket"] == "day" and body["from"] == "2026-11-01T00:00:00+03:00"
    assert [(i["period"], i["state"], i["route"], i["count"]) for i in body["items"]] == [
        ("2026-11-02", "AWAITING_HOLD", "BANK", 1),
        ("2026-11-02", "COMPLETED", "BANK", 2),
        ("2026-11-03", "JAWAZAT_QUEUE", "JAWAZAT", 1),
        ("2026-11-04", "ORDERED", "AUTOMATIC", 1),
        ("2026-11-09", "JAWAZAT_QUEUE", "JAWAZAT", 1),
    ]
    weekly = await get(stats_client, "/api/v1/stats/refunds", "agent", bucket="week", **NOVEMBER)
    assert [(i["period"], i["state"], i["count"]) for i in weekly["items"]] == [
        ("2026-11-02", "AWAITING_HOLD", 1), ("2026-11-02", "COMPLETED", 2), ("2026-11-02", "JAWAZAT_QUEUE", 1),
        ("2026-11-02", "ORDERED", 1), ("2026-11-09", "JAWAZAT_QUEUE", 1)], "weeks start on Monday"


async def test_sla_compliance_is_given_per_agency_owning_the_route(stats_client):
    body = await get(stats_client, "/api/v1/stats/sla", "auditor", **NOVEMBER)
    assert [(i["agency"], i["met"], i["missed"], i["overdue"], i["open_on_time"], i["compliance"])
            for i in body["items"]] == [
        ("BANK", 1, 1, 1, 0, 0.3333),
        ("JAWAZAT", 0, 0, 1, 1, 0.0),
        ("MUSANED", 0, 0, 0, 1, None),
    ]


async def test_the_default_window_is_the_last_30_days(stats_client):
    body = await get(stats_client, "/api/v1/stats/sla", "auditor")
    assert (body["from"], body["to"]) == ("2026-10-10T12:00:00+03:00", "2026-11-09T12:00:00+03:00")
    assert sum(i["overdue"] + i["open_on_time"] + i["met"] + i["missed"] for i in body["items"]) == 6


@pytest.mark.parametrize("params", [
    {"from": "2026-11-01T00:00:00", "to": "2026-11-10T00:00:00+03:00"},          # no offset
    {"from": "2026-11-10T00:00:00+03:00", "to": "2026-11-01T00:00:00+03:00"},    # backwards
    {"from": "2020-01-01T00:00:00+03:00", "to": "2026-11-01T00:00:00+03:00"},    # too many days
    {"bucket": "year"},
])
async def test_a_window_that_cannot_be_drawn_is_refused(params, stats_client):
    response = await stats_client.get("/api/v1/stats/refunds", params=params, headers=as_role("auditor"))
    assert response.status_code == 422, response.text
