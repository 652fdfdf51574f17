"""Queries: audit case lookup and a typical search against the real audit API with
1,000,000 cases loaded (100,000 in the quick run).

Cases are loaded with COPY (asyncpg's binary copy, indexes built after the
load), not through the API: one refund case per payment, a timeline of three
ledger events per case, two cases per person. The API is the service's own
composition (``bench.api_server``: ``build_api`` under uvicorn on 127.0.0.1, with
its access audit writing one row per request).

* latency: one request at a time, p50/p99 (ms);
* throughput: ``CONCURRENCY`` clients for a few seconds, requests/s;
* raw limit, same run: the same SQL the endpoint runs, straight through asyncpg.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.common import BENCH_SECRET, ROOT, Stack, describe, log, profile, ratio, summarise

TARGET_LOOKUP_P99_MS = 10.0
TARGET_SEARCH_P99_MS = 50.0
CONCURRENCY = 8
CHUNK = 50_000
STATES = ("COMPLETED", "COMPLETED", "COMPLETED", "ORDERED", "AWAITING_HOLD", "FAILED", "REJECTED")


def sizes(quick: bool) -> dict[str, int]:
    return {"cases": 100_000 if quick else 1_000_000, "requests": 300 if quick else 3000,
            "seconds": 3 if quick else 15}


def person(i: int) -> str:
    return f"1{i // 2:09d}"  # two cases per person


def iban(i: int) -> str:
    return f"SA{i % 97:02d}80000000{i:012d}"


def _rows(start: int, stop: int, base: datetime):
    payments, refunds, events = [], [], []
    for i in range(start, stop):
        who, account = person(i), iban(i)
        paid = base + timedelta(seconds=37 * i)
        requested = paid + timedelta(days=2)
        state = STATES[i % len(STATES)]
        payment_id, refund_id = f"PAY-B-{i:09d}", f"RR-PAY-B-{i:09d}"
        completed = requested + timedelta(hours=30) if state == "COMPLETED" else None
        failed = requested + timedelta(hours=30) if state == "FAILED" else None  # the bank returned it
        payments.append((payment_id, who, who, account, "JAWAZAT", "PASSPORT_ISSUE", 30000, "SAR", "SADAD_ONLINE",
                         "80", False, paid, paid, paid + timedelta(seconds=30),
                         state if state == "COMPLETED" else "NONE", completed, paid))
        refunds.append((refund_id, who, "JAWAZAT", "PASSPORT_ISSUE", 20000, account, "80", "BANK", "BANK", state,
                        "BANK", "2026.1", False, json.dumps({"payment_id": payment_id}), payment_id, requested,
                        requested + timedelta(days=5), requested + timedelta(minutes=1), completed,
                        f"80-{i:09d}" if completed or failed else None, True if completed else None, 3, requested,
                        failed, "ACCOUNT_CLOSED" if failed else None))
        for n, (kind, at, key) in enumerate((("ledger.payment.recorded", paid, None),
                                             ("ledger.refund.requested", requested, refund_id),
                                             ("ledger.refund.ordered", requested + timedelta(minutes=1), refund_id))):
            events.append((f"{payment_id}:{n}", "ledger.refunds" if key else "ledger.payments", kind,
                           "refund-ledger/bench", "bank/80", f"ev-{i}-{n}", "payment.recorded", None, who,
                           payment_id, key, None, at, at, "{}"))
    return payments, refunds, events


PAYMENT_COLUMNS = ["payment_id", "beneficiary_id", "payer_id", "payer_iban", "agency", "service_code", "amount",
                   "currency", "channel", "bank_code", "third_party_payer", "paid_at", "recorded_at",
                   "acknowledged_at", "refund_state", "refunded_at", "updated_at"]
REFUND_COLUMNS = ["refund_id", "beneficiary_id", "agency", "service_code", "amount", "iban", "bank_code", "channel",
                  "route", "state", "route_owner", "rules_version", "third_party_payer", "reference", "payment_id",
                  "requested_at", "deadline", "ordered_at", "completed_at", "bank_reference", "completed_on_time",
                  "version", "updated_at", "failed_at", "failure_reason"]
EVENT_COLUMNS = ["event_id", "topic", "type", "source", "origin_source", "origin_id", "origin_type", "subject",
                 "beneficiary_id", "payment_id", "refund_id", "visa_key", "occurred_at", "recorded_at", "data"]
LOADED = {"payments": PAYMENT_COLUMNS, "refunds": REFUND_COLUMNS, "ledger_events": EVENT_COLUMNS}


async def load(database_url: str, cases: int) -> dict[str, Any]:
    """COPY ``cases`` refund cases (with payments and timelines); indexes are rebuilt after."""
    import asyncpg
    from services.audit.projections import SCHEMA_SQL

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'audit' AND tablename = ANY($1::text[]) "
            "AND indexname NOT LIKE '%_pkey'", list(LOADED))
        for row in indexes:
            await conn.execute(f'DROP INDEX audit."{row["indexname"]}"')
        started = time.monotonic()
        base = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for start in range(0, cases, CHUNK):
            payments, refunds, events = _rows(start, min(cases, start + CHUNK), base)
            await conn.copy_records_to_table("payments", schema_name="audit", records=payments,
                                             columns=PAYMENT_COLUMNS)
            await conn.copy_records_to_table("refunds", schema_name="audit", records=refunds, columns=REFUND_COLUMNS)
            await conn.copy_records_to_table("ledger_events", schema_name="audit", records=events,
                                             columns=EVENT_COLUMNS)
        copied = time.monotonic() - started
        await conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))  # the indexes again
        await conn.execute("ANALYZE audit.payments; ANALYZE audit.refunds; ANALYZE audit.ledger_events")
        total = time.monotonic() - started
    finally:
        await conn.close()
    rows = cases * 5
    return {"cases": cases, "rows": rows, "copy_seconds": round(copied, 1), "with_indexes_seconds": round(total, 1),
            "rows_per_s": round(rows / copied, 0)}


async def _latencies(call, keys: list[str]) -> list[float]:
    out = []
    for key in keys:
        started = time.perf_counter()
        await call(key)
        out.append(time.perf_counter() - started)
    return out


async def _throughput(call, keys: list[str], seconds: float, concurrency: int = CONCURRENCY) -> float:
    done = 0
    stop_at = time.monotonic() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < stop_at:
            await call(keys[i % len(keys)])
            i += concurrency
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return done / (time.monotonic() - started)


async def measure(database_url: str, port: int, cases: int, size: dict[str, int]) -> dict[str, Any]:
    import aiohttp
    import asyncpg
    from services.audit.api import CASE_QUERIES
    from services.kit.auth import issue_token

    rng = random.Random(8)
    token = issue_token(BENCH_SECRET, "agent", "bench", 3600)
    refund_keys = [f"RR-PAY-B-{rng.randrange(cases):09d}" for _ in range(size["requests"])]
    person_keys = [person(rng.randrange(cases)) for _ in range(size["requests"])]
    base = f"http://127.0.0.1:{port}/api/v1"
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                     connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as http:
        async def lookup(key: str) -> None:
            async with http.get(f"{base}/refunds/{key}") as response:
                assert response.status == 200, (response.status, await response.text())
                await response.read()

        async def search(key: str) -> None:
            async with http.get(f"{base}/search", params={"q": key}) as response:
                assert response.status == 200, (response.status, await response.text())
                body = await response.json()
                assert len(body["items"]) >= 3, body  # balances + the person's payments and refunds

        for name, call, keys in (("lookup", lookup, refund_keys), ("search", search, person_keys)):
            await _latencies(call, keys[:50])  # warm the connections and the pool
            latencies = await _latencies(call, keys)
            results[name] = {"api": {"latency_ms": summarise(latencies),
                                     "requests_per_s": round(await _throughput(call, keys, size["seconds"]), 1)}}

    pool = await asyncpg.create_pool(database_url, min_size=CONCURRENCY, max_size=CONCURRENCY)
    case_sql, timeline_sql = CASE_QUERIES["refund"]
    try:
        async def raw_lookup(key: str) -> None:
            async with pool.acquire() as conn:
                await conn.fetchrow(case_sql, key)
                await conn.fetch(timeline_sql, key)

        async def raw_search(key: str) -> None:  # the queries GET /search runs for a person
            async with pool.acquire() as conn:
                for column in ("beneficiary_id", "payer_id"):
                    await conn.fetch("SELECT payment_id, agency, service_code, amount, refund_state "  # noqa: S608
                                     f"FROM audit.payments WHERE {column} = $1 ORDER BY paid_at DESC LIMIT 20", key)
                await conn.fetch("SELECT refund_id, route, state, amount FROM audit.refunds WHERE beneficiary_id = $1 "
                                 "ORDER BY requested_at DESC LIMIT 20", key)
                await conn.fetch("SELECT sponsor_id, export_number, serial_number, visa_type, route FROM audit.visas "
                                 "WHERE sponsor_id = $1 ORDER BY issued_at DESC NULLS LAST LIMIT 20", key)

        for name, call, keys in (("lookup", raw_lookup, refund_keys), ("search", raw_search, person_keys)):
            await _latencies(call, keys[:50])
            latencies = await _latencies(call, keys)
            results[name]["raw"] = {"latency_ms": summarise(latencies),
                                    "requests_per_s": round(await _throughput(call, keys, size["seconds"]), 1)}
            results[name]["ratio_requests_per_s"] = ratio(results[name]["api"]["requests_per_s"],
                                                          results[name]["raw"]["requests_per_s"])
    finally:
        await pool.close()
    return results


def bench(stack: Stack, quick: bool, ctx: dict[str, Any]) -> dict[str, Any]:
    from services.kit.embedded import free_port, spawn

    size = sizes(quick)
    database_url = stack.database("bench_queries")
    log(f"queries: loading {size['cases']} cases with COPY")
    loaded = asyncio.run(load(database_url, size["cases"]))
    log(f"queries: loaded in {loaded['with_indexes_seconds']} s; starting the audit API")
    port = free_port()
    log_path = stack.run_dir / "bench-api.log"
    with log_path.open("ab") as out:
        server = spawn([sys.executable, "-m", "bench.api_server", database_url, str(port), BENCH_SECRET],
                       cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/readyz", server, log_path)
        results = asyncio.run(measure(database_url, port, size["cases"], size))
        lookup_p99 = results["lookup"]["api"]["latency_ms"]["p99"]
        search_p99 = results["search"]["api"]["latency_ms"]["p99"]
        if lookup_p99 >= TARGET_LOOKUP_P99_MS or search_p99 >= TARGET_SEARCH_P99_MS:
            results["profile"] = asyncio.run(profile_api(server.pid, port, size))
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    met = lookup_p99 < TARGET_LOOKUP_P99_MS and search_p99 < TARGET_SEARCH_P99_MS
    result = {
        "what": "GET /api/v1/refunds/{id} (case + timeline) and GET /api/v1/search?q=<national id> against "
                "the audit API (uvicorn, 127.0.0.1, access audit on), vs the same SQL through asyncpg; "
                f"latency one request at a time, requests/s with {CONCURRENCY} concurrent clients",
        "load": loaded, **results,
        "target": {"lookup_p99_ms_below": TARGET_LOOKUP_P99_MS, "search_p99_ms_below": TARGET_SEARCH_P99_MS},
        "met": met,
    }
    gaps = []
    if lookup_p99 >= TARGET_LOOKUP_P99_MS:
        gaps.append(f"lookup p99 {lookup_p99:.1f} ms is {lookup_p99 / TARGET_LOOKUP_P99_MS:.1f}× the target")
    if search_p99 >= TARGET_SEARCH_P99_MS:
        gaps.append(f"search p99 {search_p99:.1f} ms is {search_p99 / TARGET_SEARCH_P99_MS:.1f}× the target")
    if gaps:
        result["gap"] = "; ".join(gaps)
        result["bottleneck"] = describe({"audit API": result.get("profile")})
    return result


async def profile_api(pid: int, port: int, size: dict[str, int]) -> dict:
    """py-spy the API server during an extra window of concurrent case lookups (not counted)."""
    import aiohttp
    from services.kit.auth import issue_token

    seconds = max(4, size["seconds"])
    keys = [f"RR-PAY-B-{i:09d}" for i in range(0, size["cases"], max(1, size["cases"] // 1000))]
    token = issue_token(BENCH_SECRET, "agent", "bench", 3600)
    out = ROOT / "bench" / "results" / "profiles" / "queries-api"
    spy = asyncio.create_task(asyncio.to_thread(profile, pid, seconds, out))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async def lookup(key: str) -> None:
            async with http.get(f"http://127.0.0.1:{port}/api/v1/refunds/{key}") as response:
                await response.read()

        await _throughput(lookup, keys, seconds + 1)
    return await spy


def _wait_http(url: str, proc: subprocess.Popen, log_path, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"audit API exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"audit API not up in {timeout:.0f} s")
