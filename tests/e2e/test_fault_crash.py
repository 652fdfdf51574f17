"""Crash test: SIGKILL every service several times at random moments while a
scenario of 20,000 events flows, restart it each time, let everything drain,
then compare every balance, payment, refund state, visa route and ledger fact
in the audit read model (and a sample of audit API answers) with the ground
truth computed from the scenario itself. Zero lost, zero doubled.

The kill schedule comes from a seeded RNG and is printed with the figures.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from services.cli.simulate import Scenario, signed
from services.kit.auth import issue_token
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.ground_truth import FACT_TOPICS, Truth, mismatches, waves
from tests.e2e.harness import ServiceProcess, produce, start_all, wait_for
from tests.factories import TEST_KEYRING

pytestmark = pytest.mark.e2e

SEED = 20261125
EVENTS = 20_000
SERVICES = ("payments", "visas", "refunds", "audit")
KILLS_PER_SERVICE = 3
KILL_WINDOW = (2.0, 75.0)     # seconds after the first event is sent
MIN_GAP = 12.0                # between two kills of one service: each restart gets to join its group
INBOUND = {"payments": ("payments",), "visas": ("visas", "cancellations"),
           "refunds": ("refund-requests", "bank-returns")}


def kill_schedule(rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the start, service) for every kill, in time order."""
    schedule = []
    for service in SERVICES:
        while True:
            moments = sorted(rng.uniform(*KILL_WINDOW) for _ in range(KILLS_PER_SERVICE))
            if all(b - a >= MIN_GAP for a, b in itertools.pairwise(moments)):
                break
        schedule += [(round(t, 1), service) for t in moments]
    return sorted(schedule)


class Killer(threading.Thread):
    """Carries out the kill schedule: SIGKILL, then start the service again at once."""

    def __init__(self, running: dict[str, ServiceProcess], env: dict[str, str],
                 schedule: list[tuple[float, str]]) -> None:
        super().__init__(name="killer", daemon=True)
        self.running, self.env, self.schedule = running, env, schedule
        self.done: list[tuple[float, str, int, int]] = []   # (when, service, old pid, new pid)
        self.stop = threading.Event()
        self.finished = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        for moment, service in self.schedule:
            if self.stop.wait(max(0.0, started + moment - time.monotonic())):
                return
            old = self.running[service]
            old.kill()
            new = self.running[service] = ServiceProcess(service, self.env).start()
            self.done.append((round(time.monotonic() - started, 1), service, old.pid or 0, new.pid or 0))
        self.finished.set()
        # Stay alive until the test ends: a child started from this thread gets SIGTERM when the
        # thread exits (PR_SET_PDEATHSIG follows the spawning thread, not the process).
        self.stop.wait()


def produce_in_chunks(bootstrap: str, prefix: str, records, chunk: int = 1000) -> None:
    for start in range(0, len(records), chunk):
        produce(bootstrap, [(prefix + r.topic, r.key, r.value) for r in records[start:start + chunk]])


def waiting(running: dict[str, ServiceProcess], probe, wanted: int, timeout: float, what: str) -> None:
    """Wait until ``probe()`` reaches ``wanted``; on a timeout say how far it got and show the logs."""
    try:
        wait_for(lambda: probe() == wanted, timeout, what, interval=0.5)
    except AssertionError:
        tails = "\n".join(f"--- {p.service} (pid {p.pid}) {p.log_path}\n{p.log_tail(15)}" for p in running.values())
        raise AssertionError(f"timed out waiting for {what}: {probe()} of {wanted}\n{tails}") from None


def count(database_url: str, sql: str, *params) -> int:
    with psycopg.connect(database_url) as conn:
        try:
            return conn.execute(sql, params).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def applied_inbound(database_url: str, prefix: str) -> dict[str, int]:
    """Inbound partner events each service applied (its idempotency table), per service."""
    return {service: count(database_url, f"SELECT count(*) FROM {service}.ingress_events "
                           "WHERE topic = ANY(%s)", [prefix + t for t in topics])
            for service, topics in INBOUND.items()}


@pytest.mark.timeout(600)
def test_sigkill_every_service_mid_stream_loses_nothing_and_doubles_nothing(postgres, kafka, capsys):
    database_url = fresh_database(postgres)
    prefix = f"c{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, KAFKA_COMMIT_INTERVAL="5")
    # simulated time runs ahead of the start: begin far enough back that no event is in the future
    # (the notifier's contact details are left out: the notifier is not part of this test)
    scenario = Scenario(seed=SEED).events(start=datetime.now(timezone.utc) - timedelta(hours=8))
    records = list(itertools.islice(signed((r for r in scenario if r.topic != "contacts"), TEST_KEYRING), EVENTS))
    facts, requests, answers = waves(records)
    truth = Truth.of(facts + requests + answers)
    expected_inbound = {service: sum(1 for r in records if r.topic in topics) for service, topics in INBOUND.items()}
    schedule = kill_schedule(random.Random(SEED))

    running = {name: ServiceProcess(name, env) for name in SERVICES}
    start_all(running.values())
    killer = Killer(running, env, schedule)
    started = time.monotonic()
    try:
        killer.start()
        produce_in_chunks(kafka.bootstrap_servers, prefix, facts)
        on_payments = sum(1 for r in records if r.topic == "payments")
        waiting(running, lambda: applied_inbound(database_url, prefix)["payments"], on_payments, 300,
                "every payment, charge and acknowledgement applied before the refund requests")
        produce_in_chunks(kafka.bootstrap_servers, prefix, requests)
        request_ids = [json.loads(r.value)["data"]["request_id"] for r in requests]
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM audit.refunds WHERE refund_id = ANY(%s) "
                                                     "AND state <> 'AWAITING_HOLD'", request_ids), len(request_ids),
                300, "every refund request decided before the bank answers")
        produce_in_chunks(kafka.bootstrap_servers, prefix, answers)
        assert killer.finished.wait(KILL_WINDOW[1] + 30), "the kill schedule ran to its end"
        for process in running.values():
            process.wait_ready(180)

        def differences() -> list[str]:
            with psycopg.connect(database_url) as conn:
                found = mismatches(conn, truth)
            inbound = applied_inbound(database_url, prefix)
            found += [f"{s} applied {inbound[s]} inbound events, expected {n}"
                      for s, n in expected_inbound.items() if inbound[s] != n]
            return found

        last: list[str] = []

        def converged() -> bool:
            last[:] = differences()
            return not last

        try:
            wait_for(converged, 300, "the read model to match the ground truth")
        except AssertionError:
            raise AssertionError(f"{len(last)} mismatches, first: {last[:20]}") from None
        # drained: nothing left behind in any service, and the answer still holds
        for name in ("payments", "visas", "refunds"):
            wait_for(lambda n=name: running[n].metric("refund_ledger_outbox_backlog_events") == 0, 60,
                     f"{name}'s outbox drained")
        time.sleep(1.0)  # any late, doubled application would have to land now: look again
        assert differences() == []
        api_mismatches = sample_api(running["audit"], truth, random.Random(SEED))
        assert api_mismatches == []
        rejections = count(database_url, "SELECT count(*) FROM audit.rejections")
        assert rejections == 0, "the scenario holds no bad input: nothing may be rejected"
        elapsed = time.monotonic() - started
    finally:
        killer.stop.set()
        killer.join(10)
        for process in running.values():
            process.stop()

    kills = killer.done
    assert len(kills) == len(SERVICES) * KILLS_PER_SERVICE
    with capsys.disabled():
        print(f"\n[crash test] events: {len(records)} ({len(facts)} facts, {len(requests)} refund requests, "
              f"{len(answers)} bank answers); kills: {len(kills)} (SIGKILL, {KILLS_PER_SERVICE} per service); "
              f"rejections: {rejections}; mismatches: 0 (balances {len(truth.balances)}, payments "
              f"{len(truth.payments)}, refunds {len(truth.refunds)}, visas {len(truth.visas)}, "
              f"API answers {API_SAMPLE * 2}); {elapsed:.0f} s")
        print("[crash test] kill schedule (s after start, service, pid killed -> pid started): "
              + ", ".join(f"{t} {s} {old}->{new}" for t, s, old, new in kills))


API_SAMPLE = 100


def sample_api(audit: ServiceProcess, truth: Truth, rng: random.Random) -> list[str]:
    """The audit API answers as the read model does, for a sample of balances and refunds."""
    token = issue_token(TEST_SECRET, "auditor", "crash-test", 600)
    found = []
    people = sorted({key[0] for key in truth.balances})
    for person in rng.sample(people, API_SAMPLE):
        status, body = audit.get(f"/api/v1/beneficiaries/{person}/balances", token)
        got = {(b["agency"], b["service_code"]): (b["credited"], b["charged"], b["held"], b["refunded"],
                                                  b["available"]) for b in body.get("balances", [])}
        want = {(a, s): b.row() for (p, a, s), b in truth.balances.items() if p == person}
        if status != 200 or got != want:
            found.append(f"balances of {person}: API {status} {got}, expected {want}")
    for refund_id in rng.sample(sorted(truth.refunds), API_SAMPLE):
        status, body = audit.get(f"/api/v1/refunds/{refund_id}", token)
        if status != 200 or body.get("state") != truth.refunds[refund_id]:
            found.append(f"refund {refund_id}: API {status} {body.get('state')}, expected {truth.refunds[refund_id]}")
    return found


assert set(FACT_TOPICS) <= {t for ts in INBOUND.values() for t in ts}
