"""Replay: drop every table of the audit read model and rebuild it from the
services' event stores (``refund-ledger rebuild-read-model``, which replays each
store's notification log through the relay's own translation into the
projection); the audit API answers exactly as before, endpoint by endpoint."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from services.cli.simulate import Scenario, signed
from services.kit.auth import issue_token
from services.refunds.domain import OPEN_STATES
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.ground_truth import Truth, mismatches, waves
from tests.e2e.harness import ServiceProcess, produce, start_all, wait_for
from tests.e2e.test_fault_crash import count, produce_in_chunks, waiting
from tests.factories import TEST_KEYRING
from tests.poison import Corpus

pytestmark = pytest.mark.e2e

SEED = 7070
EVENTS = 3000
ROLE_OF = {"/api/v1/jawazat/": "jawazat", "/api/v1/reviews/": "mofa", "/api/v1/access-log": "admin"}


def without_clock(body: object) -> object:
    """An answer without what depends on the clock at the time of asking: the hours an open
    case has been with its current agency so far."""
    if isinstance(body, dict) and body.get("state") in OPEN_STATES and "time_by_agency" in body:
        return {k: v for k, v in body.items() if k != "time_by_agency"}
    return body


def answers(audit: ServiceProcess, paths: list[str]) -> dict[str, object]:
    """Every path's (status, body); list endpoints followed through every page."""
    tokens = {role: issue_token(TEST_SECRET, role, "replay-test", 600) for role in ("auditor", "jawazat", "mofa")}
    found: dict[str, object] = {}
    for path in paths:
        role = next((r for p, r in ROLE_OF.items() if path.startswith(p)), "auditor")
        pages, next_path = [], path
        while next_path:
            status, body = audit.get(next_path, tokens[role])
            pages.append((status, without_clock(body)))
            cursor = body.get("next_cursor") if isinstance(body, dict) else None
            next_path = f"{path}{'&' if '?' in path else '?'}cursor={cursor}" if cursor else None
        found[path] = pages
    return found


def first_difference(a: object, b: object, where: str = "") -> str:
    """Where two JSON values first differ, and how."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}")
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{where}[{n}]")
    return f"{where or '(root)'}: {str(a)[:200]} -> {str(b)[:200]}"


def paths_to_compare(database_url: str, rng: random.Random) -> list[str]:
    with psycopg.connect(database_url) as conn:
        payments = [r[0] for r in conn.execute("SELECT payment_id FROM audit.payments ORDER BY 1")]
        people = [r[0] for r in conn.execute("SELECT DISTINCT beneficiary_id FROM audit.balances ORDER BY 1")]
        refunds = [r[0] for r in conn.execute("SELECT refund_id FROM audit.refunds ORDER BY 1")]
        visas = [r[0] for r in conn.execute("SELECT visa_key FROM audit.visas ORDER BY 1")]
    today = datetime.now(timezone.utc).date()
    window = f"from={today - timedelta(days=25)}T00:00:00Z&to={today + timedelta(days=1)}T00:00:00Z"
    paths = ["/api/v1/refunds?limit=100", "/api/v1/refunds?status=open&limit=100",
             "/api/v1/refunds?status=overdue&limit=100", "/api/v1/refunds?status=REJECTED&limit=100",
             "/api/v1/refunds?route=MOFA&limit=100", "/api/v1/refunds?agency=JAWAZAT&limit=100",
             "/api/v1/payments/unreflected?limit=100", "/api/v1/visas/status-mismatches?limit=100",
             "/api/v1/jawazat/queue?limit=100", "/api/v1/reviews/queue?limit=100",
             f"/api/v1/stats/refunds?{window}", f"/api/v1/stats/sla?{window}"]
    paths += [f"/api/v1/refunds/{r}" for r in refunds]
    paths += [f"/api/v1/payments/{p}" for p in rng.sample(payments, min(200, len(payments)))]
    paths += [f"/api/v1/beneficiaries/{p}/balances" for p in rng.sample(people, min(150, len(people)))]
    paths += [f"/api/v1/visas/{v}" for v in rng.sample(visas, min(100, len(visas)))]
    paths += [f"/api/v1/search?q={p}" for p in rng.sample(people, min(30, len(people)))]
    return paths


def stable(database_url: str, seconds: float = 2.0) -> bool:
    """No new ledger fact reached the read model for ``seconds``."""
    sql = "SELECT count(*) FROM audit.ledger_events"
    before = count(database_url, sql)
    time.sleep(seconds)
    return count(database_url, sql) == before


@pytest.mark.timeout(420)
def test_a_read_model_rebuilt_from_the_event_stores_answers_exactly_as_before(postgres, kafka, capsys):
    database_url = fresh_database(postgres)
    prefix = f"r{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, TIMER_INTERVAL="0.5")
    scenario = Scenario(seed=SEED).events(start=datetime.now(timezone.utc) - timedelta(hours=3))
    records = list(itertools.islice(signed((r for r in scenario if r.topic != "contacts"), TEST_KEYRING), EVENTS))
    facts, requests, answers_ = waves(records)
    truth = Truth.of(facts + requests + answers_)
    bad = [item for item in Corpus(seed=SEED, valid_payments=0).bad if item.after is None][:40]
    running = {name: ServiceProcess(name, env) for name in ("payments", "visas", "refunds", "audit")}
    try:
        start_all(running.values())
        produce_in_chunks(kafka.bootstrap_servers, prefix, facts)
        produce(kafka.bootstrap_servers, [(prefix + i.topic, i.key, i.value) for i in bad])
        on_payments = sum(1 for r in records if r.topic == "payments")
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM payments.ingress_events "
                                                     "WHERE topic = %s", prefix + "payments"), on_payments, 120,
                "the payments applied")
        produce_in_chunks(kafka.bootstrap_servers, prefix, requests)
        request_ids = [json.loads(r.value)["data"]["request_id"] for r in requests]
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM audit.refunds WHERE refund_id = ANY(%s) "
                                                     "AND state <> 'AWAITING_HOLD'", request_ids), len(request_ids),
                120, "the requests decided")
        produce_in_chunks(kafka.bootstrap_servers, prefix, answers_)

        def converged() -> bool:
            with psycopg.connect(database_url) as conn:
                return not mismatches(conn, truth)
        wait_for(converged, 120, "the read model to match the scenario")
        for name in ("payments", "visas", "refunds"):  # nothing more can happen: no new ledger facts
            running[name].stop()
        wait_for(lambda: stable(database_url), 60, "the audit service to catch up")
        rejections = count(database_url, "SELECT count(*) FROM audit.rejections")
        assert rejections == len(bad)
        paths = paths_to_compare(database_url, random.Random(SEED))
        before = answers(running["audit"], paths)
        running["audit"].stop()

        facts_before = count(database_url, "SELECT count(*) FROM audit.ledger_events")
        rebuilt = subprocess.run(
            [sys.executable, "-m", "services.cli", "rebuild-read-model", "--service", "payments",
             "--service", "visas", "--service", "refunds"],
            env={**running["audit"].env, "LOG_LEVEL": "warning"}, capture_output=True, text=True, timeout=180,
            check=False)
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        report = json.loads(rebuilt.stdout)
        assert {"ledger_events", "payments", "refunds", "balances", "visas", "rejections"} <= set(report["dropped"])
        assert "access_log" not in report["dropped"], "the access log is a record, not derived data"
        assert report["applied"] == facts_before, "every ledger fact projected again, once"

        running["audit"] = ServiceProcess("audit", env).start().wait_ready()
        after = answers(running["audit"], paths)
    finally:
        for process in running.values():
            process.stop()

    differing = [f"{path}: {first_difference(before[path], after[path])}" for path in paths
                 if before[path] != after[path]]
    assert all(pages[0][0] == 200 for pages in before.values()), \
        [p for p, pages in before.items() if pages[0][0] != 200][:5]
    assert differing == [], f"{len(differing)} answers changed:\n" + "\n".join(d[:300] for d in differing)
    with capsys.disabled():
        print(f"\n[replay test] events: {len(records) + len(bad)} ({len(bad)} rejected); read model dropped "
              f"({len(report['dropped'])} tables) and rebuilt from {report['notifications']} stored events "
              f"({report['applied']} ledger facts) in {report['seconds']} s; API answers compared: {len(paths)} "
              f"endpoints ({sum(len(p) for p in before.values())} pages); mismatches: 0")
