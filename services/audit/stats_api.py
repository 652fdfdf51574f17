"""``/api/v1/stats/...``: the aggregates the console draws as charts: refunds by status and route
over time, and SLA compliance per agency. Periods are Riyadh calendar days, weeks or months."""

# No "from __future__ import annotations": FastAPI must see the closures used in Depends().

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from services.audit.api import RIYADH, Pool, local, require
from services.audit.refunds_api import OPEN_STATES
from services.kit.auth import Principal

READ_ROLES = frozenset({"auditor", "agent", "jawazat", "mofa", "admin"})
Bucket = Literal["day", "week", "month"]
MAX_BUCKETS = {"day": 400, "week": 260, "month": 120}
DEFAULT_WINDOW = timedelta(days=30)


class RefundCount(BaseModel):
    period: str = Field(description="First day of the period (Riyadh calendar), YYYY-MM-DD.")
    state: str
    route: str
    count: int


class RefundStats(BaseModel):
    bucket: Bucket
    from_: str = Field(alias="from")
    to: str
    items: list[RefundCount] = Field(description="Refunds requested in each period, by their state now and route.")


class AgencySla(BaseModel):
    agency: str = Field(description="The agency whose SLA the route is (the route owner).")
    met: int = Field(description="Completed by the deadline.")
    missed: int = Field(description="Completed after the deadline.")
    overdue: int = Field(description="Still open past the deadline.")
    open_on_time: int = Field(description="Still open, deadline not reached.")
    compliance: float | None = Field(description="met / (met + missed + overdue); null when none is due yet.")


class SlaStats(BaseModel):
    from_: str = Field(alias="from")
    to: str
    items: list[AgencySla]


def _window(from_: datetime | None, to: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    for bound in (from_, to):
        if bound is not None and bound.tzinfo is None:
            raise HTTPException(422, "from/to need a UTC offset, e.g. 2026-11-01T00:00:00+03:00")
    end = to or now
    start = from_ or end - DEFAULT_WINDOW
    if start >= end:
        raise HTTPException(422, "from must be before to")
    return start, end


def create_stats_router(pool: Pool, secret: str,
                        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> APIRouter:
    router = APIRouter(prefix="/api/v1/stats")
    reader = require(READ_ROLES, secret)
    window = {"from_": Query(alias="from", description="requested at or after (default: 30 days before `to`)"),
              "to": Query(description="requested before (default: now)")}

    @router.get("/refunds", response_model=RefundStats, tags=["stats"], response_model_by_alias=True)
    async def refunds_over_time(
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        from_: Annotated[datetime | None, window["from_"]] = None,
        to: Annotated[datetime | None, window["to"]] = None,
        bucket: Bucket = "day",
    ) -> RefundStats:
        """Refunds requested per day, week or month (Riyadh calendar), by state and route."""
        start, end = _window(from_, to, clock())
        if (end - start) / {"day": timedelta(days=1), "week": timedelta(weeks=1),
                            "month": timedelta(days=28)}[bucket] > MAX_BUCKETS[bucket]:
            raise HTTPException(422, f"at most {MAX_BUCKETS[bucket]} {bucket}s; choose a longer bucket")
        async with db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT date_trunc($3, requested_at, 'Asia/Riyadh') AS period, state, route, count(*) AS n "
                "FROM audit.refunds WHERE requested_at >= $1 AND requested_at < $2 "
                "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", start, end, bucket)
        return RefundStats.model_validate({
            "bucket": bucket, "from": local(start), "to": local(end),
            "items": [RefundCount(period=r["period"].astimezone(RIYADH).date().isoformat(), state=r["state"],
                                  route=r["route"], count=r["n"]) for r in rows]})

    @router.get("/sla", response_model=SlaStats, tags=["stats"], response_model_by_alias=True)
    async def sla_per_agency(
        principal: Annotated[Principal, Depends(reader)],
        db: Annotated[asyncpg.Pool, Depends(pool)],
        from_: Annotated[datetime | None, window["from_"]] = None,
        to: Annotated[datetime | None, window["to"]] = None,
    ) -> SlaStats:
        """SLA compliance per agency owning the route, for the refunds requested in the window."""
        now = clock()
        start, end = _window(from_, to, now)
        async with db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT route_owner AS agency, "
                "count(*) FILTER (WHERE state = 'COMPLETED' AND completed_at <= deadline) AS met, "
                "count(*) FILTER (WHERE state = 'COMPLETED' AND completed_at > deadline) AS missed, "
                "count(*) FILTER (WHERE state = ANY($3::text[]) AND deadline < $4) AS overdue, "
                "count(*) FILTER (WHERE state = ANY($3::text[]) AND deadline >= $4) AS open_on_time "
                "FROM audit.refunds WHERE requested_at >= $1 AND requested_at < $2 "
                "GROUP BY route_owner ORDER BY route_owner", start, end, list(OPEN_STATES), now)
        items = []
        for r in rows:
            due = r["met"] + r["missed"] + r["overdue"]
            items.append(AgencySla(agency=r["agency"], met=r["met"], missed=r["missed"], overdue=r["overdue"],
                                   open_on_time=r["open_on_time"],
                                   compliance=round(r["met"] / due, 4) if due else None))
        return SlaStats.model_validate({"from": local(start), "to": local(end), "items": items})

    return router
