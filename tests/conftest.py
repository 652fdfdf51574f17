"""Shared fixtures: one real PostgreSQL and one real Tansu broker per test session,
on random loopback ports, stopped even when tests fail; a fresh database and
topic prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from services.kit.embedded import EmbeddedKafka, EmbeddedPostgres
from services.kit.settings import Settings
from tests.factories import TEST_BANK_KEYS_JSON

TEST_SECRET = "test-secret-" + "x" * 40  # test-only signing key, never used outside tests


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(fsync=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka]:
    broker = EmbeddedKafka().start()
    try:
        yield broker
    finally:
        broker.stop()


def fresh_database(postgres: EmbeddedPostgres) -> str:
    """A new, empty database on the session's server; returns its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> str:
    return fresh_database(postgres)


def make_settings(database_url: str, kafka: EmbeddedKafka | None = None, **env: str) -> Settings:
    base = {
        "DATABASE_URL": database_url,
        "AUDIT_API_SECRET": TEST_SECRET,
        "KAFKA_PROFILE": "embedded",
        "TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
        "INGRESS_BATCH_WITHIN": "0.02",
        "RELAY_POLL_INTERVAL": "0.05",
        "BANK_SIGNING_KEYS": TEST_BANK_KEYS_JSON,  # test-only keys: tests.factories signs bank events with them
    }
    if kafka is not None:
        base["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    return Settings.from_env({**base, **env})


@pytest.fixture
def db_settings(database_url: str) -> Settings:
    """Settings for tests that need only the database."""
    return make_settings(database_url)
