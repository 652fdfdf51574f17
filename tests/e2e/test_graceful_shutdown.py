"""SIGTERM on a service: it stops consuming, finishes the batch in hand,
flushes its outbox and exits 0 within the grace period; nothing is lost."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from services.kit.identity import with_check_digit
from services.payments.application import PaymentsApplication
from tests.conftest import fresh_database, make_settings
from tests.e2e.conftest import service_env
from tests.e2e.harness import ServiceProcess, produce, read_topic, wait_for
from tests.factories import cloudevent, payment

pytestmark = pytest.mark.e2e


def applied(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        try:
            return conn.execute("SELECT count(*) FROM payments.ingress_events").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def outbox(database_url: str) -> tuple[int, int]:
    """(newest stored event's notification id, the relay's published position)."""
    app = PaymentsApplication(make_settings(database_url))
    try:
        return app.recorder.max_notification_id() or 0, app.ingress_recorder.outbox_position("ledger")
    finally:
        app.close()


def test_sigterm_drains_the_batch_flushes_the_outbox_and_exits_zero(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"g{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, INGRESS_BATCH_MAX="50")
    people = [with_check_digit(f"1{n:08d}") for n in range(500, 520)]
    records = [(prefix + "payments", p.encode(), cloudevent("payment.recorded", payment(f"G-{n}", beneficiary_id=p)))
               for n, p in ((n, people[n % len(people)]) for n in range(2000))]
    service = ServiceProcess("payments", env).start().wait_ready()
    sender = threading.Thread(target=lambda: [produce(kafka.bootstrap_servers, records[i:i + 200])
                                              for i in range(0, len(records), 200)])
    sender.start()
    try:
        wait_for(lambda: applied(database_url) >= 300, 90, "the first payments applied")
        started = time.monotonic()
        service.terminate()
        service.wait_stopped(45)
        took = time.monotonic() - started
        assert service.exited() == 0, service.log_tail()
        assert took < 25, f"stopped within the grace period ({took:.1f} s)"
        sender.join(60)
        saved, relayed = outbox(database_url)
        assert saved > 0 and relayed == saved, "every event saved before the exit was published"
        service = ServiceProcess("payments", env).start().wait_ready()
        wait_for(lambda: applied(database_url) == 2000, 120, "every payment applied after the restart")
    finally:
        service.stop()
    ledger = read_topic(kafka.bootstrap_servers, prefix + "ledger.payments", timeout=30)
    recorded = [r for r in ledger if b'"ledger.payment.recorded"' in r.value]
    assert len({r.value for r in recorded}) >= 2000
