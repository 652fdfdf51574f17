"""Rebuild: the audit read model rebuilt from the services' event stores (those the
ingest benchmark just filled), events/s, compared with the live projection rate
of the same events during ingest (target ≥ 20×).

Raw limit, same run: reading and translating the same notification logs
without projecting them, in the same reader processes (what a rebuild could do at
best with this read path).
The rebuilt read model is checked against the live one, table by table.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from services.audit.rebuild import REPLAY_ORDER, pages, reader_processes, reading, rebuild

from bench.common import ROOT, Stack, describe, log, profile, ratio

TARGET_RATIO = 20.0
TABLES = ("ledger_events", "payments", "refunds", "visas", "balances", "rejections")


async def read_only(settings, batch: int = 2000) -> dict[str, Any]:
    """The rebuild's own reading (same reader processes, pages read ahead) with nothing projected."""
    readers = reader_processes()
    started = time.perf_counter()
    published = 0
    async with reading(readers) as readers_pool:
        for service in REPLAY_ORDER:
            async for page, _ in pages(service, settings, readers_pool, batch, 2 * readers):
                published += len(page)
    seconds = time.perf_counter() - started
    return {"events": published, "seconds": round(seconds, 2), "events_per_s": round(published / seconds, 1),
            "reader_processes": readers}


async def _rebuild(settings, target_url: str) -> dict[str, Any]:
    import asyncpg

    pool = await asyncpg.create_pool(target_url, min_size=1, max_size=2)
    try:
        report = await rebuild(settings, pool)
    finally:
        await pool.close()
    return {"events": report.published, "applied": report.applied, "notifications": report.notifications,
            "seconds": round(report.seconds, 2), "read_wait_seconds": round(report.read_wait_seconds, 2),
            "events_per_s": report.events_per_s, "per_service": report.per_service}


async def _counts(url: str) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM audit.{t}") for t in TABLES}  # noqa: S608
    finally:
        await conn.close()


def bench(stack: Stack, quick: bool, ctx: dict[str, Any]) -> dict[str, Any]:
    ingest = ctx.get("ingest")
    if ingest is None:
        raise RuntimeError("rebuild needs the ingest benchmark's event stores (run it with ingest)")
    settings = stack.settings(ingest["prefix"], ingest["database_url"])
    log("rebuild: read-only pass over the event stores (raw limit)")
    raw = asyncio.run(read_only(settings))
    target_url = stack.database("bench_rebuild")
    log(f"rebuild: replaying {raw['events']} events into a new read model")
    profiles: dict[str, Any] = {}
    window = 4 if quick else 20
    spy = threading.Thread(target=lambda: profiles.update(rebuild=profile(
        os.getpid(), window, ROOT / "bench" / "results" / "profiles" / "rebuild")), daemon=True)
    spy.start()
    rebuilt = asyncio.run(_rebuild(settings, target_url))
    spy.join(window + 60)
    live, again = asyncio.run(_counts(ingest["database_url"])), asyncio.run(_counts(target_url))
    live_rate = ingest["projected_per_s"]
    result = {
        "what": "audit read model rebuilt from the event stores of the ingest run (ledger events/s), vs the "
                "audit's live projection rate of the same events during ingest; raw = read + translate only",
        "raw": raw, "rebuild": rebuilt,
        "live_projected_per_s": live_rate,
        "live_partner_events_per_s": ingest["events_per_s"],
        "ratio_to_live": ratio(rebuilt["events_per_s"], live_rate, 1),
        "ratio_to_raw": ratio(rebuilt["events_per_s"], raw["events_per_s"]),
        "read_model_rows": {"live": live, "rebuilt": again, "identical_counts": live == again},
        "target": {"ratio_to_live_at_least": TARGET_RATIO},
    }
    result["met"] = bool(result["ratio_to_live"] and result["ratio_to_live"] >= TARGET_RATIO)
    result["profile"] = profiles
    if not result["met"]:
        result["bottleneck"] = describe(profiles)
    if not result["met"] and result["ratio_to_live"]:
        result["gap"] = (f"rebuild is {result['ratio_to_live']}× live, {TARGET_RATIO / result['ratio_to_live']:.1f}× "
                         f"short of {TARGET_RATIO:.0f}×")
    return result
