"""SIGKILL the payments service while it consumes, between applying and
committing offsets, restart it, and prove nothing was lost or applied twice."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict

import psycopg
import pytest

from services.kit.identity import with_check_digit
from services.payments.application import PaymentsApplication
from tests.conftest import fresh_database, make_settings
from tests.e2e.conftest import service_env
from tests.e2e.harness import ServiceProcess, produce, wait_for
from tests.factories import cloudevent, payment

pytestmark = pytest.mark.e2e

PEOPLE = [with_check_digit(f"1{n:08d}") for n in range(100, 160)]


def scenario(seed: int, count: int):
    """Payments with a few exact re-sends (same CloudEvent id); and the ground truth."""
    rng = random.Random(seed)
    records, truth = [], defaultdict(int)
    for n in range(count):
        person = rng.choice(PEOPLE)
        amount = rng.randint(1, 50) * 100
        value = cloudevent("payment.recorded", payment(f"K-{seed}-{n}", beneficiary_id=person, amount=amount))
        records.append((person.encode(), value))
        truth[person] += amount
        if rng.random() < 0.05:  # a partner re-sends an event it already sent
            records.append((person.encode(), value))
    return records, dict(truth)


def applied_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        try:
            return conn.execute("SELECT count(*) FROM payments.ingress_events").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def test_sigkill_between_apply_and_commit_loses_nothing_and_doubles_nothing(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"k{uuid.uuid4().hex[:8]}."
    # Offsets are committed to Kafka only every 60 s: every record applied before a
    # kill is redelivered after it, so the kill always falls between apply and commit.
    env = service_env(database_url, kafka.bootstrap_servers, prefix, KAFKA_COMMIT_INTERVAL="60",
                      INGRESS_BATCH_MAX="50")
    records, truth = scenario(seed=7, count=3000)
    topic = prefix + "payments"

    def publish_slowly():
        for start in range(0, len(records), 150):
            produce(kafka.bootstrap_servers, [(topic, k, v) for k, v in records[start:start + 150]])

    publisher = threading.Thread(target=publish_slowly)
    service = ServiceProcess("payments", env).start().wait_ready()
    publisher.start()
    try:
        for threshold in (400, 1200):
            wait_for(lambda t=threshold: applied_count(database_url) >= t, 90, f"{threshold} applied events")
            service.kill()
            service = ServiceProcess("payments", env).start().wait_ready()
        publisher.join(120)
        wait_for(lambda: applied_count(database_url) == 3000, 120, "all 3000 distinct events applied")
        assert service.metric("refund_ledger_events_duplicate_total", kind="offset") > 0, \
            "the restarted worker saw redelivered records (the kill fell before the offset commit)"
    finally:
        service.stop()

    app = PaymentsApplication(make_settings(database_url))
    try:
        for person, credited in truth.items():
            balance = app.balance(person, "JAWAZAT", "PASSPORT_ISSUE")
            assert balance is not None and balance["credited"] == credited, person
    finally:
        app.close()
