"""Ingest and memory: sustained events/s through the whole pipeline, beside the raw limit.

The same seeded ``refund-ledger simulate`` mix is produced once to the partner
topics. The raw limit (``bench.raw``) consumes and stores it first; then the
five services run as real processes (``refund-ledger run``, KAFKA_PROFILE=embedded)
and drain the same backlog: Kafka → CloudEvents + schema validation → domain →
event store with tracking → outbox → ``ledger.*`` → notifier and audit read model.

The pipeline is done when every service consumed its share of partner records
and no counter moved for a quiet period; its time runs from the first record
consumed to the last change seen. Each service's RSS is sampled throughout
(the memory benchmark) and its CPU time counted; the busiest services are
profiled with py-spy for a short window.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from bench.common import (
        ROOT,
    RssSampler,
    Services,
    Stack,
    describe,
    infrastructure_cpu,
    log,
    produce,
    profile,
    ratio,
    run,
    scenario_records,
    topic_counts,
)
from bench.raw import consume_and_store

CONSUMED = "refund_ledger_events_consumed_total"
PROJECTED = "refund_ledger_projection_applied_total"
BACKLOG = "refund_ledger_outbox_backlog_events"
TARGET_RATIO = 0.5
MEMORY_TOLERANCE = 0.10


#: Full run: 200k events (the issue's minimum for ingest). The memory benchmark asks for 1M:
#: ``python -m bench --only memory --ingest-events 1000000`` (about 45 min at ~400 events/s).
FULL_EVENTS = 200_000


def sizes(quick: bool) -> dict[str, Any]:
    return {"events": 5_000 if quick else FULL_EVENTS, "quiet": 4.0 if quick else 8.0,
            "poll": 0.5 if quick else 1.0, "profile_seconds": 6 if quick else 15, "timeout": 50 if quick else 7200}


def bench(stack: Stack, quick: bool, ctx: dict[str, Any]) -> dict[str, Any]:
    size = sizes(quick)
    n = size["events"] = ctx.get("ingest_events") or size["events"]
    prefix = "ingest."
    database_url = stack.database("bench_ingest")
    settings = stack.settings(prefix, database_url)

    log(f"ingest: generating {n} scenario events")
    records = scenario_records(stack, n, seed=8)
    counts = topic_counts(records)
    started = time.monotonic()
    run(produce(settings, records))
    produce_seconds = time.monotonic() - started
    del records
    log(f"ingest: produced {n} in {produce_seconds:.1f} s; raw limit")

    raw = run(consume_and_store(settings, [settings.topic(t) for t in counts], n))
    log(f"ingest: raw {raw['events_per_s']} events/s; starting the services")

    services = Services(stack, database_url, prefix)
    try:
        project = drain(services, counts, size, stack)
    finally:
        services.stop()
    pipeline_rate = project["events_per_s"]
    result = {
        "what": "scenario events from the partner topics through the whole pipeline vs the raw limit",
        "events": n,
        "topics": counts,
        "produce_seconds": round(produce_seconds, 2),
        "raw": raw,
        "pipeline": project,
        "ratio": ratio(pipeline_rate, raw["events_per_s"]),
        "target": {"ratio_at_least": TARGET_RATIO},
    }
    result["met"] = bool(result["ratio"] and result["ratio"] >= TARGET_RATIO)
    if not result["met"] and result["ratio"]:
        result["gap"] = (f"pipeline at {result['ratio']:.0%} of the raw limit, "
                         f"{TARGET_RATIO / result['ratio']:.1f}× short of {TARGET_RATIO:.0%}")
        result["bottleneck"] = describe(project["profile"])
    ctx["ingest"] = {"database_url": database_url, "prefix": prefix, "events_per_s": pipeline_rate,
                     "projected_per_s": project["audit_projected_per_s"], "events": n}
    ctx["memory"] = memory_result(project.pop("rss_marks"), n, project.get("rss_final", {}))
    return result


def drain(services: Services, counts: dict[str, int], size: dict[str, Any], stack: Stack) -> dict[str, Any]:
    """Start the services on the backlog and follow their counters until the pipeline is quiet."""
    import psutil

    n = sum(counts.values())
    infrastructure_before: dict[str, float] | None = None  # from the first message consumed
    cpu_at_first: dict[str, float] = {}
    services_started = time.monotonic()
    for process in services.processes.values():
        process.start()
    pids = services.pids()
    cpu = {name: psutil.Process(pid) for name, pid in pids.items()}
    sampler = RssSampler(pids, interval=size["poll"]).start()
    first: dict[str, float] = {}
    last_change: dict[str, float] = {}
    previous: dict[str, tuple] = {}
    latest: dict[str, dict[str, float]] = {}
    profiles: dict[str, Any] = {}
    profiler: threading.Thread | None = None
    deadline = services_started + size["timeout"] + 120
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"pipeline not done after {size['timeout']} s: {summary_of(latest)}")
            for name, process in services.processes.items():
                if process.exited() is not None:
                    raise RuntimeError(f"{name} exited:\n{process.log_tail()}")
                try:
                    latest[name] = services.metrics(name)
                except OSError:
                    continue
                state = (latest[name].get(CONSUMED, 0), latest[name].get(PROJECTED, 0),
                         latest[name].get("refund_ledger_outbox_published_total", 0))
                if state != previous.get(name):
                    previous[name] = state
                    last_change[name] = now
                    if (state[0] or state[1]) and name not in first:  # consumed, or (audit) projected
                        first[name] = now
                        cpu_at_first[name] = _cpu_seconds(cpu[name])  # its start-up (imports, joins) left out
                        if infrastructure_before is None:
                            infrastructure_before = infrastructure_cpu(stack)
            # each partner topic has one consuming service
            partner_done = sum(max(m.get(f"{CONSUMED}|{services_prefix(services)}{t}", 0) for m in latest.values())
                               for t in counts) if latest else 0
            sampler.progress = partner_done
            if profiler is None and partner_done >= 0.2 * n:
                profiler = threading.Thread(target=_profile_busiest, args=(cpu, size["profile_seconds"], profiles),
                                            daemon=True)
                profiler.start()
            quiet = first and all(now - last_change.get(name, now) >= size["quiet"] for name in services.processes)
            backlog = sum(m.get(BACKLOG, 0) for m in latest.values())
            if partner_done >= n and quiet and not backlog:
                break
            time.sleep(size["poll"])
    finally:
        sampler.stop()
        if profiler is not None:
            profiler.join(size["profile_seconds"] + 60)
    start = min(first.values())
    end = max(last_change.values())
    seconds = end - start
    per_service = {}
    for name in services.processes:
        m = latest.get(name, {})
        busy = last_change[name] - first.get(name, start)
        consumed = m.get(CONSUMED, 0)
        cpu_seconds = _cpu_seconds(cpu[name]) - cpu_at_first.get(name, 0.0)
        per_service[name] = {
            "consumed": int(consumed), "applied": int(m.get("refund_ledger_events_applied_total", 0)),
            "rejected": int(m.get("refund_ledger_events_rejected_total", 0)),
            "published": int(m.get("refund_ledger_outbox_published_total", 0)),
            "projected": int(m.get(PROJECTED, 0)) if name == "audit" else None,
            "busy_seconds": round(busy, 1),
            "consumed_per_s": round(consumed / busy, 1) if busy > 0 else None,
            "cpu_seconds": round(cpu_seconds, 1),
            "cpu_ms_per_partner_event": round(1000 * cpu_seconds / n, 3),
            "batch_mean_size": _mean(m, "refund_ledger_batch_size_messages"),
            "batch_mean_ms": _mean(m, "refund_ledger_batch_processing_seconds", 1000),
        }
    before = infrastructure_before or {}
    infrastructure = {name: {"cpu_seconds": round(spent - before.get(name, 0.0), 1),
                             "cpu_ms_per_partner_event": round(1000 * (spent - before.get(name, 0.0)) / n, 3)}
                      for name, spent in infrastructure_cpu(stack).items()}
    projected = per_service["audit"]["projected"] or 0
    final_rss = sampler.samples[-1][1] if sampler.samples else {}
    return {
        "events_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 1),
        "startup_seconds": round(start - services_started, 1),
        "audit_projected": projected,
        "audit_projected_per_s": round(projected / seconds, 1) if seconds > 0 else None,
        "services": per_service,
        "infrastructure": infrastructure,
        "cpu": cpu_budget(per_service, infrastructure, seconds),
        "profile": profiles,
        "rss_marks": sampler.marks,
        "rss_final": final_rss,
    }


def cpu_budget(per_service: dict[str, dict[str, Any]], infrastructure: dict[str, dict[str, Any]],
               seconds: float, cores: int | None = None) -> dict[str, Any]:
    """CPU per partner event summed over every process of the pipeline, and the rate this machine's
    cores allow at that cost: a pipeline near that rate is CPU-bound, not waiting on round trips."""
    cores = cores or os.cpu_count() or 1
    services = sum(s["cpu_ms_per_partner_event"] for s in per_service.values())
    others = sum(s["cpu_ms_per_partner_event"] for s in infrastructure.values())
    total = services + others
    used = sum(s["cpu_seconds"] for s in (*per_service.values(), *infrastructure.values()))
    return {"ms_per_partner_event": {"services": round(services, 3), "infrastructure": round(others, 3),
                                     "total": round(total, 3)},
            "cores": cores,
            "cores_busy": round(used / seconds, 2) if seconds > 0 else None,
            "events_per_s_at_full_use": round(1000 * cores / total, 1) if total else None}


def services_prefix(services: Services) -> str:
    return next(iter(services.processes.values())).env.get("TOPIC_PREFIX", "")


def _mean(metrics: dict[str, float], histogram: str, scale: float = 1.0) -> float | None:
    count = metrics.get(f"{histogram}_count")
    return round(scale * metrics.get(f"{histogram}_sum", 0) / count, 2) if count else None


def summary_of(latest: dict[str, dict[str, float]]) -> dict[str, float]:
    return {name: m.get(CONSUMED, 0) for name, m in latest.items()}


def _profile_busiest(cpu: dict, seconds: float, out: dict[str, Any], how_many: int = 3,
                     label: str = "ingest") -> None:
    """py-spy the services using most CPU right now, at the same time."""
    import psutil

    for proc in cpu.values():
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    busy = sorted(cpu, key=lambda name: -_percent(cpu[name]))[:how_many]
    threads = []
    for name in busy:
        def one(name=name) -> None:
            out[name] = profile(cpu[name].pid, seconds, ROOT / "bench" / "results" / "profiles" / f"{label}-{name}")
        threads.append(threading.Thread(target=one, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 90)


def _cpu_seconds(proc) -> float:
    import psutil

    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _percent(proc) -> float:
    import psutil

    try:
        return proc.cpu_percent(None)
    except psutil.Error:
        return 0.0


def rss_curve(marks: list[tuple[float, dict[str, int]]], n: int,
              final: dict[str, int]) -> dict[str, list[float | None]]:
    """RSS (MB) of each service at 10 %, 20 %, ... 90 % of the events processed and at the end:
    a curve that flattens is a cache filling; one that keeps rising is a leak."""
    curves: dict[str, list[float | None]] = {}
    for name, end in final.items():
        points: list[float | None] = []
        for tenth in range(1, 10):
            value = next((rss[name] for progress, rss in marks if progress >= tenth * n / 10 and name in rss), None)
            points.append(round(value / 2**20, 1) if value else None)
        curves[name] = [*points, round(end / 2**20, 1)]
    return curves


def memory_result(marks: list[tuple[float, dict[str, int]]], n: int, final: dict[str, int]) -> dict[str, Any]:
    """RSS per service at 10 % of the run (100k of 1M) and at its end; flat means within ±10 %."""
    at_tenth = next((rss for progress, rss in marks if progress >= 0.1 * n and rss), None)
    peak: dict[str, int] = {}
    for _, rss in marks:
        for name, value in rss.items():
            peak[name] = max(peak.get(name, 0), value)
    curves = rss_curve(marks, n, final)
    services = {}
    for name, end in final.items():
        early = (at_tenth or {}).get(name)
        growth = round(end / early - 1, 3) if early else None
        services[name] = {"rss_mb_at_10pct": round(early / 2**20, 1) if early else None,
                          "rss_mb_at_end": round(end / 2**20, 1),
                          "rss_mb_peak": round(max(peak.get(name, 0), end) / 2**20, 1),
                          "growth": growth, "flat": growth is not None and abs(growth) <= MEMORY_TOLERANCE,
                          "rss_mb_by_tenth": curves[name]}
    flat = bool(services) and all(s["flat"] for s in services.values())
    gap = memory_gap(services)
    return {**({"gap": gap} if gap else {}),"what": f"RSS of each service sampled across the {n}-event ingest run; "
                    f"from {n // 10} events processed to the end",
            "events": n, "services": services, "target": {"growth_within": MEMORY_TOLERANCE}, "met": flat,
            "samples": len(marks)}


def memory_gap(services: dict[str, dict[str, Any]]) -> str:
    """The services whose RSS moved more than the tolerance, and by how much."""
    moved = [f"{name} {s['growth']:+.0%}" for name, s in services.items() if not s["flat"] and s["growth"] is not None]
    return f"RSS moved more than ±10 % from 10 % of the run to its end: {', '.join(moved)}" if moved else ""
