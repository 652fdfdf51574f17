"""A running payments + audit pair, shared by the tests of one module."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from services.kit.auth import issue_token
from tests.conftest import TEST_SECRET, fresh_database
from tests.e2e.harness import ServiceProcess, start_all


def service_env(database_url: str, bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PREFIX": prefix,
            "AUDIT_API_SECRET": TEST_SECRET, "KAFKA_PROFILE": "embedded", "LOG_LEVEL": "info",
            "INGRESS_BATCH_WITHIN": "0.02", "RELAY_POLL_INTERVAL": "0.05", "TOPIC_PARTITIONS": "4",
            **extra}


@dataclass
class Stack:
    bootstrap: str
    prefix: str
    database_url: str
    payments: ServiceProcess
    audit: ServiceProcess

    def topic(self, name: str) -> str:
        return self.prefix + name

    def token(self, role: str = "auditor") -> str:
        return issue_token(TEST_SECRET, role, "e2e-test", 600)


@pytest.fixture(scope="module")
def stack(postgres, kafka):
    database_url = fresh_database(postgres)
    prefix = f"e{uuid.uuid4().hex[:8]}."
    env = service_env(database_url, kafka.bootstrap_servers, prefix)
    processes = [ServiceProcess("payments", env), ServiceProcess("audit", env)]
    try:
        start_all(processes)
        yield Stack(kafka.bootstrap_servers, prefix, database_url, *processes)
    finally:
        for process in processes:
            process.stop()
