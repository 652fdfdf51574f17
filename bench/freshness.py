"""Freshness: at a steady 1,000 events/s, the time from produce to visible in the read model.

Project: scenario traffic (live-dated, ``refund-ledger simulate``'s mix) is
produced at a steady rate to the partner topics of running services; every
``payment.recorded`` is a probe, and a poller asks the audit read model (the
table the API reads) every 20 ms which probes are visible. Latency = first
seen − just before send, on one clock.

Raw limit, same run, same rate: the plain aiokafka consumer + batched
``eventsourcing`` store (``bench.raw``); latency = its transaction's commit −
the record's Kafka timestamp (set by the producer at send).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

import psutil

from bench.common import PARTNER_TOPICS, Services, Stack, describe, log, summarise
from bench.ingest import _profile_busiest
from bench.raw import consume_and_store

RATE = 1000.0
TARGET_P99_MS = 500.0
POLL = 0.02


def sizes(quick: bool) -> dict[str, float]:
    return {"seconds": 10 if quick else 60, "raw_seconds": 6 if quick else 30, "settle": 15 if quick else 30,
            "low_seconds": 6 if quick else 30}


async def paced(stack: Stack, settings, seconds: float, rate: float, seed: int,
                sent_at: dict[str, float] | None = None) -> int:
    """Produce live scenario traffic at ``rate`` for ``seconds``; note each payment's send time."""
    from services.cli.simulate import Scenario
    from services.kit.kafka import Publisher, ensure_topics

    await ensure_topics(settings)
    publisher = Publisher(settings)
    await publisher.start()
    producer = publisher._producer
    events = iter(stack.signed(Scenario(seed=seed).events(clock=lambda: datetime.now(timezone.utc))))
    futures, sent, started = [], 0, time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                record = next(events)
                if sent_at is not None and record.topic == "payments" and b'"payment.recorded"' in record.value:
                    sent_at[json.loads(record.value)["data"]["payment_id"]] = time.time()
                futures.append(await producer.send(settings.topic(record.topic), record.value, key=record.key))
                sent += 1
            if len(futures) > 2000:
                await asyncio.gather(*futures)
                futures.clear()
            await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
    finally:
        await publisher.stop()
    return sent


async def watch(database_url: str, sent_at: dict[str, float], seen_at: dict[str, float], until: asyncio.Event,
                settle: float) -> None:
    """Poll the audit read model for the probes until every one is seen (or ``settle`` after ``until``)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        settled_by = None
        while True:
            pending = [k for k in sent_at if k not in seen_at]
            if pending:
                rows = await conn.fetch("SELECT payment_id FROM audit.payments WHERE payment_id = ANY($1::text[])",
                                        pending)
                now = time.time()
                for row in rows:
                    seen_at[row["payment_id"]] = now
            if until.is_set():
                settled_by = settled_by or time.monotonic() + settle
                if len(seen_at) >= len(sent_at) or time.monotonic() > settled_by:
                    return
            await asyncio.sleep(POLL)
    finally:
        await conn.close()


async def project_run(stack: Stack, settings, database_url: str, seconds: float, settle: float,
                      rate: float = RATE, seed: int = 1000) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    done = asyncio.Event()
    watcher = asyncio.create_task(watch(database_url, sent_at, seen_at, done, settle))
    try:
        sent = await paced(stack, settings, seconds, rate, seed=seed, sent_at=sent_at)
    finally:
        done.set()
        await watcher
    latencies = [seen_at[k] - sent_at[k] for k in seen_at]
    return {"rate": rate, "events_sent": sent, "probes": len(sent_at), "probes_seen": len(seen_at),
            "latency_ms": summarise(latencies), "poll_interval_ms": POLL * 1000}


async def raw_run(stack: Stack, settings, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    from services.kit.kafka import ensure_topics

    await ensure_topics(settings)
    total: dict[str, int] = {}
    consumer = asyncio.create_task(consume_and_store(
        settings, [settings.topic(t) for t in PARTNER_TOPICS], lambda: total.get("sent"), timeout=seconds + 30,
        latencies=latencies))
    await asyncio.sleep(1.0)  # the consumer is assigned and waiting
    sent = total["sent"] = await paced(stack, settings, seconds, RATE, seed=1001)
    stored = await consumer
    return {"events_sent": sent, "events_stored": stored["events"], "latency_ms": summarise(latencies)}


def bench(stack: Stack, quick: bool, ctx: dict[str, Any]) -> dict[str, Any]:
    size = sizes(quick)
    raw_settings = stack.settings("freshraw.", stack.database("bench_fresh_raw"))
    log(f"freshness: raw limit at {RATE:.0f} events/s for {size['raw_seconds']} s")
    raw = asyncio.run(raw_run(stack, raw_settings, size["raw_seconds"]))
    database_url = stack.database("bench_fresh")
    prefix = "fresh."
    services = Services(stack, database_url, prefix)
    try:
        log("freshness: starting the services")
        services.start()
        settings = stack.settings(prefix, database_url)
        # first below the pipeline's capacity (half the ingest rate just measured), while nothing is queued
        low_rate = round(ctx["ingest"]["events_per_s"] / 2, -1) if ctx.get("ingest") else 200.0
        log(f"freshness: pipeline at {low_rate:.0f} events/s (below capacity) for {size['low_seconds']} s")
        below = asyncio.run(project_run(stack, settings, database_url, size["low_seconds"], 10, low_rate, seed=999))
        log(f"freshness: pipeline at {RATE:.0f} events/s for {size['seconds']} s")
        profiles: dict[str, Any] = {}
        cpu = {name: psutil.Process(pid) for name, pid in services.pids().items()}
        profiler = threading.Timer(2.0, _profile_busiest, args=(cpu, size["seconds"] / 2, profiles),
                                   kwargs={"label": "freshness"})
        profiler.daemon = True
        profiler.start()
        project = asyncio.run(project_run(stack, settings, database_url, size["seconds"], size["settle"]))
        profiler.join(size["seconds"] + 60)
    finally:
        services.stop()
    p99 = project["latency_ms"]["p99"]
    result = {
        "what": f"produce → visible in the audit read model at a steady {RATE:.0f} events/s "
                "(probe: every payment.recorded), vs produce → committed by the raw consumer",
        "rate": RATE, "seconds": size["seconds"],
        "raw": raw, "pipeline": project,
        "below_capacity": {**below, "note": "the same pipeline at half the ingest rate measured in this run "
                                            "(no target; shows the latency when nothing is queued)"},
        "ratio_p99": round(p99 / raw["latency_ms"]["p99"], 2) if p99 and raw["latency_ms"]["p99"] else None,
        "target": {"p99_ms_below": TARGET_P99_MS},
        "met": bool(p99 is not None and p99 < TARGET_P99_MS and project["probes_seen"] == project["probes"]),
    }
    if p99 is not None and p99 >= TARGET_P99_MS:
        result["gap"] = f"p99 {p99:.0f} ms is {p99 / TARGET_P99_MS:.1f}× the {TARGET_P99_MS:.0f} ms target"
    result["profile"] = profiles
    if not result["met"]:
        result["bottleneck"] = describe(profiles)
    if project["probes_seen"] < project["probes"]:
        result["gap"] = (result.get("gap", "") + f"; {project['probes'] - project['probes_seen']} probes not "
                         f"visible {size['settle']} s after the run").lstrip("; ")
    return result
