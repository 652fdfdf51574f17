"""Poison input: a corpus of more than 200 bad events (``tests/poison.py``) mixed
into a valid stream and sent through the running services. Each bad one lands
on ``rejections`` with its precise ``reason_code``, every valid one is applied
(the read model matches the ground truth of the valid stream), and no service
restarts (same PIDs, one start in each log)."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import psycopg
import pytest

from tests.conftest import fresh_database
from tests.e2e.conftest import service_env
from tests.e2e.ground_truth import Truth, mismatches
from tests.e2e.harness import ServiceProcess, produce, read_topic, start_all, wait_for
from tests.poison import Corpus

pytestmark = pytest.mark.e2e

SEED = 200


def test_every_bad_event_is_rejected_with_its_reason_and_every_valid_one_applied(postgres, kafka, capsys):
    database_url = fresh_database(postgres)
    prefix = f"p{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix, INGRESS_BATCH_MAX="100")
    corpus = Corpus(seed=SEED)
    stream = corpus.stream()
    assert len(corpus.bad) >= 200
    running = [ServiceProcess(name, env) for name in ("payments", "visas", "audit")]
    try:
        start_all(running)
        pids = {p.service: p.pid for p in running}
        positions = produce(kafka.bootstrap_servers, [(prefix + i.topic, i.key, i.value) for i in stream])
        expected = {(prefix + item.topic, partition, offset): item
                    for item, (partition, offset) in zip(stream, positions, strict=True) if item.reason_code}

        def rejected() -> dict[tuple[str, int, int], str] | None:
            found = {}
            for record in read_topic(kafka.bootstrap_servers, prefix + "rejections"):
                data = json.loads(record.value)["data"]
                original = data["original"]
                found[(original["topic"], original["partition"], original["offset"])] = data["reason_code"]
            return found if len(found) >= len(expected) else None

        got = wait_for(rejected, 120, f"{len(expected)} rejections")
        wrong = sorted(f"{item.label}: expected {item.reason_code}, got {got.get(key)}"
                       for key, item in expected.items() if got.get(key) != item.reason_code)
        assert wrong == [], f"{len(wrong)} of {len(expected)} bad events with the wrong reason"
        assert set(got) == set(expected), "no valid event was rejected"

        truth = Truth.of(corpus.valid)
        last: list[str] = []

        def applied() -> bool:
            with psycopg.connect(database_url) as conn:
                last[:] = mismatches(conn, truth)
                projected = conn.execute("SELECT reason_code, count(*) FROM audit.rejections GROUP BY 1").fetchall()
            return not last and dict(projected) == Counter(i.reason_code for i in corpus.bad)

        try:
            wait_for(applied, 120, "every valid event applied and every rejection in the read model")
        except AssertionError:
            raise AssertionError(f"{len(last)} mismatches, first: {last[:10]}") from None

        for process in running:
            assert process.exited() is None and process.pid == pids[process.service], f"{process.service} restarted"
            starts = process.log_path.read_text(errors="replace").count('"message": "service started"')
            assert starts <= 1, f"{process.service} started {starts} times"
    finally:
        for process in running:
            process.stop()
    reasons = Counter(i.reason_code for i in corpus.bad)
    with capsys.disabled():
        print(f"\n[poison test] events: {len(stream)} ({len(corpus.valid)} valid, all applied; {len(corpus.bad)} bad); "
              f"rejections: {len(got)}, each with its expected reason_code; mismatches: 0; service restarts: 0; "
              f"by reason: {dict(sorted(reasons.items()))}")
