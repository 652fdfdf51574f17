"""Broker outage and database outage, 30 s each, in the middle of a scenario.

The services keep running (same PIDs), report not-ready (``/readyz`` 503)
while cut off, retry with backoff, and catch up: at the end the read model
matches the ground truth of the scenario, nothing lost, nothing doubled.

* **Broker**: the embedded Tansu keeps topics in memory only (this binary has
  no storage engine that keeps data: its postgres, libsql, slatedb and turso
  engines are not compiled in and ``s3://`` needs an S3 server), so stopping
  its process would lose every topic. The outage is a cut of every connection
  in front of it instead: a forwarder on the advertised port drops all open
  connections and refuses new ones for 30 s, which is what the clients see of
  a stopped broker; the partners (the test's producer) hold their events and
  send them once it is back.
* **Database**: the test's own PostgreSQL server is shut down (fast shutdown:
  every connection closed) and started again 30 s later on the same port and
  data directory.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from services.cli.simulate import Scenario, signed
from services.kit.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from tests.conftest import fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.ground_truth import Truth, mismatches, waves
from tests.e2e.harness import ServiceProcess, start_all, wait_for
from tests.e2e.test_fault_crash import count, produce_in_chunks, waiting
from tests.factories import TEST_KEYRING
from tests.netcut import Cut

pytestmark = pytest.mark.e2e

SEED = 3030
EVENTS = 4000
OUTAGE = 30.0
SERVICES = ("payments", "visas", "refunds", "audit")


def not_ready(running: dict[str, ServiceProcess]) -> set[str]:
    """The services answering 503 on /readyz (and alive: /healthz answers)."""
    down = set()
    for name, process in running.items():
        assert process.exited() is None, f"{name} exited during the outage:\n{process.log_tail()}"
        try:
            if process.get("/readyz", timeout=3)[0] == 503:
                down.add(name)
        except OSError:
            pass
    return down


def outage(running: dict[str, ServiceProcess], what: str, seconds: float) -> dict[str, float]:
    """Wait out the outage; every service must say it is not ready within it. Seconds to notice, per service."""
    started = time.monotonic()
    noticed: dict[str, float] = {}
    while time.monotonic() - started < seconds:
        for name in not_ready(running) - noticed.keys():
            noticed[name] = round(time.monotonic() - started, 1)
        time.sleep(0.5)
    assert noticed.keys() == running.keys(), f"not-ready during the {what} outage: only {sorted(noticed)}"
    return noticed


@pytest.mark.timeout(420)
def test_services_ride_out_a_broker_outage_and_a_database_outage_and_lose_nothing(capsys):
    pg_dir = Path(tempfile.mkdtemp(prefix="refund-ledger-outage-pg-"))
    postgres = EmbeddedPostgres(data_dir=pg_dir, fsync=False).start()
    broker_port, proxy_port = free_port(), free_port()
    broker = EmbeddedKafka(port=broker_port, advertised_port=proxy_port).start()
    line = Cut(proxy_port, broker_port).connect()
    running: dict[str, ServiceProcess] = {}
    try:
        database_url = fresh_database(postgres)
        prefix = f"o{uuid.uuid4().hex[:8]}."
        env = service_env(database_url, broker.bootstrap_servers, prefix, SHUTDOWN_GRACE="10")
        scenario = Scenario(seed=SEED).events(start=datetime.now(timezone.utc) - timedelta(hours=3))
        records = list(itertools.islice(signed((r for r in scenario if r.topic != "contacts"), TEST_KEYRING),
                                        EVENTS))
        facts, requests, answers = waves(records)
        truth = Truth.of(facts + requests + answers)
        running = {name: ServiceProcess(name, env) for name in SERVICES}
        start_all(running.values())
        pids = {name: p.pid for name, p in running.items()}

        half = len(facts) // 2
        produce_in_chunks(broker.bootstrap_servers, prefix, facts[:half])
        line.cut()                                   # --- broker outage, mid-stream
        broker_noticed = outage(running, "broker", OUTAGE)
        line.connect()
        produce_in_chunks(broker.bootstrap_servers, prefix, facts[half:])   # the partners send what they held
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM payments.ingress_events "
                                                     "WHERE topic = %s", prefix + "payments"),
                sum(1 for r in records if r.topic == "payments"), 180, "the payments applied after the broker outage")
        for process in running.values():
            process.wait_ready(60)

        produce_in_chunks(broker.bootstrap_servers, prefix, requests)
        time.sleep(1.0)
        postgres.stop()                              # --- database outage, mid-stream (the data directory stays)
        database_noticed = outage(running, "database", OUTAGE)
        postgres.start()
        request_ids = [json.loads(r.value)["data"]["request_id"] for r in requests]
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM audit.refunds WHERE refund_id = ANY(%s) "
                                                     "AND state <> 'AWAITING_HOLD'", request_ids), len(request_ids),
                180, "the requests decided after the database outage")
        produce_in_chunks(broker.bootstrap_servers, prefix, answers)
        last: list[str] = []

        def converged() -> bool:
            with psycopg.connect(database_url) as conn:
                last[:] = mismatches(conn, truth)
            return not last

        try:
            wait_for(converged, 180, "the read model to match the scenario")
        except AssertionError:
            raise AssertionError(f"{len(last)} mismatches, first: {last[:10]}") from None
        for name, process in running.items():
            process.wait_ready(60)
            assert process.pid == pids[name] and process.exited() is None, f"{name} restarted"
            assert process.get("/healthz")[0] == 200, f"{name} alive (its consumer makes progress)"
        rejections = count(database_url, "SELECT count(*) FROM audit.rejections")
        assert rejections == 0
    finally:
        for process in running.values():
            process.stop()
        line.cut()
        broker.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    with capsys.disabled():
        print(f"\n[outage test] events: {len(records)}; broker cut for {OUTAGE:.0f} s (not-ready after "
              f"{broker_noticed} s), database down for {OUTAGE:.0f} s (not-ready after {database_noticed} s); "
              f"service restarts: 0; rejections: {rejections}; mismatches: 0")
