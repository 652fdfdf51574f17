"""The metrics SREs watch (issue #6), scraped from ``/metrics`` of every running
service after the refund journeys (a seeded scenario: journeys A, B and C, plus
bad events) and parsed with ``prometheus_client.parser``: each metric is there
and says what the journeys did, counted from the scenario itself.

``test_refund_journeys.py`` checks a few of them after its hand-made journeys;
this test covers the whole list.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.cli.simulate import Scenario, signed
from services.cli.sinks import MailSink, SmsGateway
from services.kit.auth import issue_token
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.ground_truth import Truth, mismatches, waves
from tests.e2e.harness import ServiceProcess, produce, start_all, wait_for
from tests.e2e.test_fault_crash import count, produce_in_chunks, waiting
from tests.factories import TEST_KEYRING
from tests.poison import Corpus, Item

pytestmark = pytest.mark.e2e

SEED = 6006
EVENTS = 1500

# The notifier's delivery metrics, per channel: the notifier runs here with a local mail server
# (which refuses one mailbox in ten, as a real one would) and SMS gateway.
NOTIFICATION_METRICS = [
    "refund_ledger_notifications_sent_total",
    "refund_ledger_notifications_failed_total",
    "refund_ledger_notifications_pending",
    "refund_ledger_notifications_dead_lettered_total",
]


def notifications_settled(notifier: ServiceProcess, database_url: str) -> Counter:
    """Wait until the notifier has nothing pending and its record stops growing; its outcomes by
    (type, channel), as the audit read model holds them."""
    def outcomes() -> Counter:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT type, data->>'channel', count(*) FROM audit.ledger_events "
                                "WHERE topic = 'ledger.notifications' GROUP BY 1, 2").fetchall()
        return Counter({(t, c): k for t, c, k in rows})

    last: list[Counter] = []

    def still() -> bool:
        scrape = Scrape(notifier)
        now = outcomes()
        quiet = bool(last) and now == last[-1] and sum(now.values()) > 0
        last.append(now)
        return quiet and scrape.value("refund_ledger_notifications_pending") == 0 and scrape.value(
            "refund_ledger_consumer_lag_messages") == 0 and scrape.value("refund_ledger_outbox_backlog_events") == 0
    wait_for(still, 120, "the notifier to deliver everything", interval=6)  # past the 5 s pending-gauge refresh
    return last[-1]


class Scrape:
    """Every sample of one ``/metrics`` answer."""

    def __init__(self, process: ServiceProcess) -> None:
        status, text = process.get("/metrics")
        assert status == 200, text
        self.samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for n, ls, v in self.samples if n == name and all(ls.get(k) == w for k, w in labels.items()))

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        found: Counter = Counter()
        for n, labels, value in self.samples:
            if n == name:
                found[tuple(labels.get(k, "") for k in keys)] += value
        return dict(found)


def refund_routes(truth: Truth) -> Counter:
    """(state, route) -> refund cases, from the scenario."""
    visa_route = {facts["refund_id"]: truth.visas.get(key) for key, facts in truth._visa_facts.items()}
    routes: Counter = Counter()
    for refund_id, state in truth.refunds.items():
        route = "JAWAZAT" if refund_id.startswith("AB-") else visa_route.get(refund_id) or "BANK"
        routes[(state, route)] += 1
    return routes


@pytest.mark.timeout(300)
def test_every_metric_sres_watch_is_exposed_and_counts_what_the_journeys_did(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"s{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, TIMER_INTERVAL="0.5")
    scenario = signed(Scenario(seed=SEED).events(start=datetime.now(timezone.utc) - timedelta(hours=3)), TEST_KEYRING)
    contacts, records = [], []
    for record in scenario:  # the Absher contacts of the people in the first EVENTS partner events
        (contacts if record.topic == "contacts" else records).append(record)
        if len(records) == EVENTS:
            break
    facts, requests, answers = waves(records)
    truth = Truth.of(facts + requests + answers)
    bad = [*[item for item in Corpus(seed=SEED, valid_payments=0).bad if item.after is None][::4],
           Item("not JSON", "refund-requests", None, b"{", "malformed_json"),
           Item("no value", "bank-returns", None, b"", "empty_message")]
    mail, sms = MailSink(refuse=lambda address: address[9] == "7"), SmsGateway()  # 1 person in 10 refused
    mail.start()
    sms.start()
    env |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mail.port), "SMTP_STARTTLS": "false",
            "SMS_GATEWAY_URL": sms.url, "NOTIFIER_COALESCE_SECONDS": "1", "NOTIFIER_DISPATCH_INTERVAL": "0.2"}
    running = {name: ServiceProcess(name, env) for name in ("payments", "visas", "refunds", "notifier", "audit")}
    try:
        start_all(running.values())
        produce_in_chunks(kafka.bootstrap_servers, prefix, contacts)
        produce_in_chunks(kafka.bootstrap_servers, prefix, facts)
        produce(kafka.bootstrap_servers, [(prefix + i.topic, i.key, i.value) for i in bad])
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM payments.ingress_events WHERE topic = %s",
                                       prefix + "payments"), sum(1 for r in records if r.topic == "payments"), 120,
                "the payments applied")
        produce_in_chunks(kafka.bootstrap_servers, prefix, requests)
        request_ids = [json.loads(r.value)["data"]["request_id"] for r in requests]
        waiting(running, lambda: count(database_url, "SELECT count(*) FROM audit.refunds WHERE refund_id = ANY(%s) "
                                                     "AND state <> 'AWAITING_HOLD'", request_ids), len(request_ids),
                120, "the requests decided")
        produce_in_chunks(kafka.bootstrap_servers, prefix, answers)

        def converged() -> bool:
            with psycopg.connect(database_url) as conn:
                return not mismatches(conn, truth)
        wait_for(converged, 120, "the read model to match the scenario")
        audit = running["audit"]
        with psycopg.connect(database_url) as conn:
            gauges = {
                "overdue": dict(conn.execute(
                    "SELECT agency, count(*) FROM audit.refunds WHERE overdue AND state IN "
                    "('AWAITING_HOLD', 'JAWAZAT_QUEUE', 'MANUAL_REVIEW', 'ORDERED') GROUP BY 1").fetchall()),
                "unreflected": conn.execute("SELECT count(*) FROM audit.payments "
                                            "WHERE unreflected_since IS NOT NULL").fetchone()[0],
                "mismatches": conn.execute("SELECT count(*) FROM audit.visas "
                                           "WHERE status_mismatch_at IS NOT NULL").fetchone()[0],
                "overdue_events": conn.execute("SELECT count(*) FROM audit.ledger_events "
                                               "WHERE type = 'ledger.refund.overdue'").fetchone()[0],
            }
        # the read-model gauges are refreshed every 15 s
        wait_for(lambda: Scrape(audit).by("refund_ledger_refunds", "state", "route") == refund_routes(truth), 40,
                 "refunds by state and route from the read model")

        # audit API traffic: 5 cases found, one unknown, one without a token, one role that may not
        auditor = issue_token(TEST_SECRET, "auditor", "metrics-test", 600)
        for refund_id in sorted(truth.refunds)[:5]:
            assert audit.get(f"/api/v1/refunds/{refund_id}", auditor)[0] == 200
        assert audit.get("/api/v1/refunds/NO-SUCH-REFUND", auditor)[0] == 404
        assert audit.get(f"/api/v1/refunds/{sorted(truth.refunds)[0]}")[0] == 401
        assert audit.get("/api/v1/access-log", auditor)[0] == 403  # admin only
        told = notifications_settled(running["notifier"], database_url)
        scraped = {name: Scrape(process) for name, process in running.items()}
        delivered = {"sms": len(sms.messages()), "email": len(mail.messages())}
        with psycopg.connect(database_url) as conn:
            access_records = conn.execute("SELECT count(*) FROM audit.access_log").fetchone()[0]
            projected = dict(conn.execute("SELECT topic, count(*) FROM audit.ledger_events GROUP BY 1").fetchall())
    finally:
        for process in running.values():
            process.stop()
        mail.stop()
        sms.stop()

    sent = Counter((r.topic, json.loads(r.value)["type"]) for r in records)
    bad_sent = Counter((i.topic, i.reason_code) for i in bad)
    inbound = {"payments": ("payments",), "visas": ("visas", "cancellations"),
               "refunds": ("refund-requests", "bank-returns")}
    for service, topics in inbound.items():
        m = scraped[service]
        for topic in topics:
            received = sum(n for (t, _), n in sent.items() if t == topic) + sum(
                n for (t, _), n in bad_sent.items() if t == topic)
            assert m.value("refund_ledger_events_consumed_total", topic=prefix + topic) >= received, (service, topic)
            assert m.by("refund_ledger_events_applied_total", "type") and all(
                m.value("refund_ledger_events_applied_total", topic=prefix + topic, type=t) == n
                for (tp, t), n in sent.items() if tp == topic), (service, topic, "applied once each, by type")
            for (tp, reason), n in bad_sent.items():
                if tp == topic:
                    assert m.value("refund_ledger_events_rejected_total", topic=prefix + topic,
                                   reason_code=reason) == n, (topic, reason)
            applied = sum(n for (t, _), n in sent.items() if t == topic)
            assert m.value("refund_ledger_event_lag_seconds_count", topic=prefix + topic) == applied
            partitions = {p for (t, p) in m.by("refund_ledger_consumer_lag_messages", "topic", "partition")
                          if t == prefix + topic}
            assert partitions, f"consumer lag of {topic} per partition"
            assert m.value("refund_ledger_consumer_lag_messages", topic=prefix + topic) == 0, "all applied"
        assert m.value("refund_ledger_batch_processing_seconds_count") > 0
        assert m.value("refund_ledger_batch_size_messages_sum") >= sum(
            n for (t, _), n in sent.items() if t in topics)
        assert m.value("refund_ledger_outbox_backlog_events") == 0
        ledger_topic = f"ledger.{service}"
        assert m.value("refund_ledger_outbox_published_total", topic=ledger_topic) >= projected[ledger_topic]
        assert m.value("refund_ledger_dependency_up", dependency="database") == 1
        assert m.value("refund_ledger_dependency_up", dependency="broker") == 1
    assert scraped["payments"].value("refund_ledger_outbox_published_total", topic="rejections") == sum(
        n for (t, _), n in bad_sent.items() if t == "payments")
    assert scraped["refunds"].value("refund_ledger_outbox_published_total", topic="bank-refund-orders") > 0
    assert scraped["refunds"].value("refund_ledger_events_passed_over_total") > 0, "ledger events of no use there"
    assert scraped["payments"].value("refund_ledger_timers_fired_total") > 0, "unreflected payments"
    assert scraped["refunds"].value("refund_ledger_timers_fired_total") > 0, "overdue refunds, mismatches"

    m = scraped["audit"]
    assert m.by("refund_ledger_projection_applied_total", "topic") == {
        (topic,): n for topic, n in projected.items()}
    assert m.by("refund_ledger_refunds_overdue", "agency") == {(a,): n for a, n in gauges["overdue"].items()}
    assert gauges["overdue"], "the backdated cases went overdue"
    assert m.value("refund_ledger_sla_breaches_total") == gauges["overdue_events"] > 0
    assert m.value("refund_ledger_unreflected_payments") == gauges["unreflected"] > 0
    assert m.value("refund_ledger_status_mismatches") == gauges["mismatches"] > 0
    route = "/api/v1/refunds/{refund_id}"
    assert (m.value("refund_ledger_http_requests_total", route=route, method="GET", status="200"),
            m.value("refund_ledger_http_requests_total", route=route, method="GET", status="404"),
            m.value("refund_ledger_http_requests_total", route=route, method="GET", status="401")) == (5, 1, 1)
    assert m.value("refund_ledger_http_requests_total", route="/api/v1/access-log", status="403") == 1
    assert m.value("refund_ledger_http_request_duration_seconds_count", route=route, method="GET") == 7
    assert m.value("refund_ledger_access_audit_records_total") == access_records > 0

    n = scraped["notifier"]
    assert set(NOTIFICATION_METRICS) <= n.names(), set(NOTIFICATION_METRICS) - n.names()
    for channel in ("sms", "email"):
        # what the channel took = what the notifier counts as sent = what the ledger records as sent
        assert n.value("refund_ledger_notifications_sent_total", channel=channel) == delivered[channel] == told[
            ("ledger.notification.sent", channel)] > 0, channel
        assert n.value("refund_ledger_notifications_pending", channel=channel) == 0, channel
    refused = told[("ledger.notification.dead_lettered", "email")]
    assert refused > 0, "the mail server refused some mailboxes"
    assert n.value("refund_ledger_notifications_dead_lettered_total", channel="email", reason="refused") == refused
    assert n.value("refund_ledger_notifications_failed_total", channel="email") == refused  # refused once, no retry
    assert n.value("refund_ledger_notifications_failed_total", channel="sms") == 0
    assert n.value("refund_ledger_outbox_published_total", topic="ledger.notifications") == sum(told.values())

    expected = {
        "refund_ledger_events_consumed_total", "refund_ledger_events_applied_total",
        "refund_ledger_events_rejected_total", "refund_ledger_batch_processing_seconds_bucket",
        "refund_ledger_event_lag_seconds_bucket", "refund_ledger_consumer_lag_messages",
        "refund_ledger_outbox_backlog_events", "refund_ledger_outbox_published_total",
        "refund_ledger_dependency_up"}  # timers: payments and refunds have them (above), visas none
    for service in inbound:
        assert expected <= scraped[service].names(), (service, expected - scraped[service].names())
    assert {"refund_ledger_refunds", "refund_ledger_refunds_overdue", "refund_ledger_sla_breaches_total",
            "refund_ledger_unreflected_payments", "refund_ledger_status_mismatches",
            "refund_ledger_http_requests_total", "refund_ledger_http_request_duration_seconds_bucket",
            "refund_ledger_access_audit_records_total", "refund_ledger_projection_applied_total",
            "refund_ledger_consumer_lag_messages"} <= m.names()
