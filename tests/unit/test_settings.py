"""Settings read from an environment mapping: profiles, defaults, errors that name their keys."""

import ssl

import faust
import pytest

from services.kit.kafka import client_options
from services.kit.runtime import broker_credentials
from services.kit.settings import Settings, SettingsError

CLUSTER = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-0.kafka:9092,kafka-1.kafka:9092"}


def test_without_bootstrap_servers_the_profile_is_embedded():
    assert Settings.from_env({}).kafka_profile == "embedded"
    assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": ""}).kafka_profile == "embedded"


def test_with_bootstrap_servers_the_profile_is_cluster():
    settings = Settings.from_env(CLUSTER)
    assert settings.kafka_profile == "cluster"
    assert settings.kafka_bootstrap_servers == "kafka-0.kafka:9092,kafka-1.kafka:9092"


def test_an_explicit_profile_wins_over_the_bootstrap_servers():
    assert Settings.from_env({**CLUSTER, "KAFKA_PROFILE": "embedded"}).kafka_profile == "embedded"
    assert Settings.from_env({"KAFKA_PROFILE": "cluster"}).kafka_profile == "cluster"
    assert Settings.from_env({**CLUSTER, "KAFKA_PROFILE": " Embedded "}).kafka_profile == "embedded"


def test_an_unknown_profile_is_an_error_naming_the_key():
    with pytest.raises(SettingsError, match=r"KAFKA_PROFILE='local'"):
        Settings.from_env({"KAFKA_PROFILE": "local"})


def test_the_embedded_profile_has_short_timings_and_no_idempotent_producer():
    settings = Settings.from_env({})
    assert (settings.kafka_rebalance_timeout, settings.kafka_session_timeout,
            settings.kafka_heartbeat_interval) == (5.0, 10.0, 1.0)
    assert settings.kafka_idempotent_producer is False
    assert settings.topic_replication == 1


def test_the_cluster_profile_has_broker_defaults_and_an_idempotent_producer():
    settings = Settings.from_env(CLUSTER)
    assert (settings.kafka_rebalance_timeout, settings.kafka_session_timeout,
            settings.kafka_heartbeat_interval) == (60.0, 60.0, 3.0)
    assert settings.kafka_idempotent_producer is True
    assert settings.topic_replication == 3
    assert (settings.topic_partitions, settings.kafka_commit_interval) == (4, 2.8)
    assert (settings.batch_max, settings.batch_within, settings.executor_threads) == (500, 0.05, 4)
    assert (settings.web_port, settings.audit_api_port, settings.token_ttl_seconds) == (6066, 8080, 8 * 3600)


def test_explicit_values_override_the_profile_defaults():
    settings = Settings.from_env({**CLUSTER, "KAFKA_SESSION_TIMEOUT": "45", "KAFKA_IDEMPOTENT_PRODUCER": "no",
                                  "TOPIC_REPLICATION": "2", "WEB_PORT": "7001"})
    assert (settings.kafka_session_timeout, settings.kafka_idempotent_producer) == (45.0, False)
    assert (settings.topic_replication, settings.web_port) == (2, 7001)


def test_the_mapping_given_is_read_not_the_process_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert Settings.from_env({}).kafka_profile == "embedded"


@pytest.mark.parametrize(("key", "value"), [
    ("WEB_PORT", "eighty"),
    ("TOPIC_PARTITIONS", "4.5"),
    ("INGRESS_BATCH_WITHIN", "50ms"),
    ("KAFKA_SESSION_TIMEOUT", "1m"),
])
def test_a_value_that_is_not_a_number_is_an_error_naming_the_key(key, value):
    with pytest.raises(SettingsError, match=rf"^{key}='{value}' is not a number$"):
        Settings.from_env({key: value})


def test_a_flag_that_is_not_a_boolean_is_an_error_naming_the_key():
    with pytest.raises(SettingsError, match=r"KAFKA_IDEMPOTENT_PRODUCER='maybe'"):
        Settings.from_env({"KAFKA_IDEMPOTENT_PRODUCER": "maybe"})


def test_require_names_every_missing_key_in_one_error():
    settings = Settings.from_env({"AUDIT_API_SECRET": "s" * 40})
    with pytest.raises(SettingsError) as caught:
        settings.require("kafka_bootstrap_servers", "database_url", "audit_api_secret")
    assert str(caught.value) == "missing settings: KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL"


def test_require_is_quiet_when_everything_is_set():
    Settings.from_env({**CLUSTER, "DATABASE_URL": "postgresql://db/ledger"}).require(
        "kafka_bootstrap_servers", "database_url")


def test_topic_applies_the_prefix():
    assert Settings.from_env({"TOPIC_PREFIX": "staging."}).topic("payments") == "staging.payments"
    assert Settings.from_env({}).topic("bank-returns") == "bank-returns"


def test_postgres_env_reads_user_password_host_port_and_database_from_the_url():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://ledger:s3cret@db.internal:5433/refund_ledger"})
    env = settings.postgres_env("payments")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert {k: env[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_PORT",
                                "POSTGRES_DBNAME", "POSTGRES_SCHEMA")} == {
        "POSTGRES_USER": "ledger", "POSTGRES_PASSWORD": "s3cret", "POSTGRES_HOST": "db.internal",
        "POSTGRES_PORT": "5433", "POSTGRES_DBNAME": "refund_ledger", "POSTGRES_SCHEMA": "payments"}


def test_postgres_env_decodes_a_percent_encoded_password():
    settings = Settings.from_env({"DATABASE_URL": "postgres://ledger:p%40ss%2Fw%3Ard%25@db:5432/ledger"})
    assert settings.postgres_env("visas")["POSTGRES_PASSWORD"] == "p@ss/w:rd%"


def test_postgres_env_fills_in_defaults_for_what_the_url_leaves_out():
    env = Settings.from_env({"DATABASE_URL": "postgresql://db.internal"}).postgres_env("refunds")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "postgres", "", "5432", "postgres")


def test_postgres_env_rejects_a_url_that_is_not_postgres():
    settings = Settings.from_env({"DATABASE_URL": "mysql://ledger:s3cret@db.internal:3306/refund_ledger"})
    with pytest.raises(SettingsError, match=r"DATABASE_URL .*'mysql'"):
        settings.postgres_env("payments")


def test_postgres_env_without_a_database_url_names_the_key():
    with pytest.raises(SettingsError, match=r"missing settings: DATABASE_URL"):
        Settings.from_env({}).postgres_env("payments")


def test_kafka_connections_are_plaintext_unless_configured():
    options = client_options(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}))
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}
    assert broker_credentials(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"})) is None


def test_sasl_scram_over_tls_reaches_every_kafka_client():
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9093", "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                                  "KAFKA_SASL_USERNAME": "refund-ledger-refunds", "KAFKA_SASL_PASSWORD": "s3cret-x"})
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("refund-ledger-refunds", "s3cret-x")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "refund-ledger-refunds"


def test_sasl_without_credentials_names_both_missing_settings():
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError) as caught:
        client_options(settings)
    assert "KAFKA_SASL_USERNAME" in str(caught.value) and "KAFKA_SASL_PASSWORD" in str(caught.value)


@pytest.mark.parametrize(("key", "value"), [("KAFKA_SECURITY_PROTOCOL", "TLS"), ("KAFKA_SASL_MECHANISM", "GSSAPI")])
def test_an_unknown_kafka_security_setting_is_refused_by_name(key, value):
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({key: value})
