"""One typed settings object per process, read from the environment (12-factor).

Build it once in ``main()`` with :meth:`Settings.from_env` and pass it down;
nothing in the project reads the environment at import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit


class SettingsError(ValueError):
    """Raised when a setting is missing or malformed; names every key it read."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{key}={raw!r} is not a boolean (use true/false)")


def _number(env: Mapping[str, str], key: str, default: float, cast=float):
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number") from None


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _keyring(raw: str, path: str) -> dict[str, dict[str, str]]:
    """BANK_SIGNING_KEYS (JSON) or the file BANK_SIGNING_KEYS_FILE names: bank code -> {key id -> secret}."""
    from services.kit.signatures import Keyring, KeyringError

    if raw.strip() and path:
        raise SettingsError("set BANK_SIGNING_KEYS or BANK_SIGNING_KEYS_FILE, not both")
    if path:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"BANK_SIGNING_KEYS_FILE={path!r}: {exc.strerror}") from None
    try:
        Keyring.from_json(raw)
    except KeyringError as exc:
        raise SettingsError(f"BANK_SIGNING_KEYS: {exc}") from None
    return json.loads(raw) if raw.strip() else {}


def _choice(env: Mapping[str, str], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(key, default).strip().upper() or default
    if value not in allowed:
        raise SettingsError(f"{key}={value!r}: use one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a refund-ledger process can be configured with.

    Every field maps to one environment variable; the README lists them.
    """

    kafka_bootstrap_servers: str = ""        # KAFKA_BOOTSTRAP_SERVERS; empty = embedded broker
    database_url: str = ""                   # DATABASE_URL; empty = embedded PostgreSQL
    audit_api_secret: str = ""               # AUDIT_API_SECRET
    topic_prefix: str = ""                   # TOPIC_PREFIX: isolates tests / environments
    topic_partitions: int = 4                # TOPIC_PARTITIONS
    topic_replication: int = 1               # TOPIC_REPLICATION
    # Kafka client behaviour. "embedded" = the short timings Tansu needs.
    kafka_profile: str = "cluster"           # KAFKA_PROFILE: cluster | embedded
    kafka_idempotent_producer: bool = True   # KAFKA_IDEMPOTENT_PRODUCER (Tansu refuses it)
    kafka_security_protocol: str = "PLAINTEXT"  # KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str = ""            # KAFKA_SASL_USERNAME (e.g. the service's KafkaUser)
    kafka_sasl_password: str = ""            # KAFKA_SASL_PASSWORD (from a Secret, never in the repository)
    kafka_ssl_cafile: str = ""               # KAFKA_SSL_CAFILE: the cluster CA for TLS listeners
    kafka_rebalance_timeout: float = 60.0    # KAFKA_REBALANCE_TIMEOUT seconds
    kafka_session_timeout: float = 60.0      # KAFKA_SESSION_TIMEOUT seconds
    kafka_heartbeat_interval: float = 3.0    # KAFKA_HEARTBEAT_INTERVAL seconds
    kafka_commit_interval: float = 2.8       # KAFKA_COMMIT_INTERVAL seconds between offset commits
    kafka_request_timeout: float = 15.0      # KAFKA_REQUEST_TIMEOUT seconds a produce may wait for the broker
    # Ingress batching and the bounded executor for blocking work.
    batch_max: int = 500                     # INGRESS_BATCH_MAX messages per transaction
    batch_within: float = 0.05               # INGRESS_BATCH_WITHIN seconds to fill a batch
    executor_threads: int = 4                # EXECUTOR_THREADS
    relay_poll_interval: float = 0.2         # RELAY_POLL_INTERVAL seconds
    relay_batch: int = 500                   # RELAY_BATCH notifications per publish
    timer_interval: float = 5.0              # TIMER_INTERVAL seconds between deadline checks
    event_time_max_future: float = 300.0     # EVENT_TIME_MAX_FUTURE seconds an inbound time may be ahead of now
    progress_stall_after: float = 120.0      # PROGRESS_STALL_AFTER s with records waiting and none applied: not alive
    event_time_earliest: str = "2000-01-01T00:00:00+00:00"  # EVENT_TIME_EARLIEST: older inbound times are refused
    aggregate_cache: int = 10000             # AGGREGATE_CACHE_MAXSIZE
    malloc_trim_interval: float = 10.0       # MALLOC_TRIM_INTERVAL s between giving freed heap back; 0 = never
    # Web: each service serves /metrics, /healthz, /readyz.
    web_host: str = "127.0.0.1"              # WEB_HOST
    web_port: int = 6066                     # WEB_PORT
    audit_api_host: str = "127.0.0.1"        # AUDIT_API_HOST
    embedded_kafka_port: int = 9092          # EMBEDDED_KAFKA_PORT: where `up` starts its own broker
    audit_api_port: int = 8080               # AUDIT_API_PORT
    token_ttl_seconds: int = 8 * 3600        # AUDIT_TOKEN_TTL seconds
    data_dir: str = ""                       # DATA_DIR: Faust's local state; empty = temp dir
    log_level: str = "info"                  # LOG_LEVEL
    shutdown_grace: float = 20.0             # SHUTDOWN_GRACE seconds from SIGTERM to a forced exit
    schemas_dir: str = ""                    # SCHEMAS_DIR; empty = the repository's schemas/
    rules_file: str = ""                     # RULES_FILE; empty = services/kit/reference/rules.json
    liaisons_file: str = ""                  # LIAISONS_FILE; empty = services/kit/reference/liaisons.json
    # Security (README "Security"): bank event signatures, encryption of stored events, keyed hashes.
    # BANK_SIGNING_KEYS / BANK_SIGNING_KEYS_FILE: bank code -> {key id -> secret}; not in repr, not hashed
    bank_signing_keys: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, hash=False)
    cipher_key: str = field(default="", repr=False)  # CIPHER_KEY: base64 AES key; empty = stored events in clear
    cipher_required: bool = False            # CIPHER_REQUIRED: refuse to start without CIPHER_KEY (prod)
    chain_digest_interval: float = 300.0     # CHAIN_DIGEST_INTERVAL seconds between digests of all hash chains

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        profile = env.get("KAFKA_PROFILE", "").strip().lower()
        if not profile:
            profile = "cluster" if env.get("KAFKA_BOOTSTRAP_SERVERS") else "embedded"
        if profile not in {"cluster", "embedded"}:
            raise SettingsError(f"KAFKA_PROFILE={profile!r}: use 'cluster' or 'embedded'")
        embedded = profile == "embedded"
        return cls(
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", ""),
            database_url=env.get("DATABASE_URL", ""),
            audit_api_secret=env.get("AUDIT_API_SECRET", ""),
            topic_prefix=env.get("TOPIC_PREFIX", ""),
            topic_partitions=_number(env, "TOPIC_PARTITIONS", 4, int),
            topic_replication=_number(env, "TOPIC_REPLICATION", 1 if embedded else 3, int),
            kafka_profile=profile,
            kafka_idempotent_producer=_flag(env, "KAFKA_IDEMPOTENT_PRODUCER", not embedded),
            kafka_security_protocol=_choice(env, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS),
            kafka_sasl_mechanism=_choice(env, "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", SASL_MECHANISMS),
            kafka_sasl_username=env.get("KAFKA_SASL_USERNAME", ""),
            kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD", ""),
            kafka_ssl_cafile=env.get("KAFKA_SSL_CAFILE", ""),
            kafka_rebalance_timeout=_number(env, "KAFKA_REBALANCE_TIMEOUT", 5.0 if embedded else 60.0),
            kafka_session_timeout=_number(env, "KAFKA_SESSION_TIMEOUT", 10.0 if embedded else 60.0),
            kafka_heartbeat_interval=_number(env, "KAFKA_HEARTBEAT_INTERVAL", 1.0 if embedded else 3.0),
            kafka_commit_interval=_number(env, "KAFKA_COMMIT_INTERVAL", 2.8),
            kafka_request_timeout=_number(env, "KAFKA_REQUEST_TIMEOUT", 15.0),
            batch_max=_number(env, "INGRESS_BATCH_MAX", 500, int),
            batch_within=_number(env, "INGRESS_BATCH_WITHIN", 0.05),
            executor_threads=_number(env, "EXECUTOR_THREADS", 4, int),
            relay_poll_interval=_number(env, "RELAY_POLL_INTERVAL", 0.2),
            relay_batch=_number(env, "RELAY_BATCH", 500, int),
            timer_interval=_number(env, "TIMER_INTERVAL", 5.0),
            event_time_max_future=_number(env, "EVENT_TIME_MAX_FUTURE", 300.0),
            progress_stall_after=_number(env, "PROGRESS_STALL_AFTER", 120.0),
            event_time_earliest=env.get("EVENT_TIME_EARLIEST", "") or "2000-01-01T00:00:00+00:00",
            aggregate_cache=_number(env, "AGGREGATE_CACHE_MAXSIZE", 10000, int),
            malloc_trim_interval=_number(env, "MALLOC_TRIM_INTERVAL", 10.0),
            web_host=env.get("WEB_HOST", "127.0.0.1"),
            web_port=_number(env, "WEB_PORT", 6066, int),
            audit_api_host=env.get("AUDIT_API_HOST", "127.0.0.1"),
            embedded_kafka_port=_number(env, "EMBEDDED_KAFKA_PORT", 9092, int),
            audit_api_port=_number(env, "AUDIT_API_PORT", 8080, int),
            token_ttl_seconds=_number(env, "AUDIT_TOKEN_TTL", 8 * 3600, int),
            data_dir=env.get("DATA_DIR", ""),
            log_level=env.get("LOG_LEVEL", "info").lower(),
            shutdown_grace=_number(env, "SHUTDOWN_GRACE", 20.0),
            schemas_dir=env.get("SCHEMAS_DIR", ""),
            rules_file=env.get("RULES_FILE", ""),
            liaisons_file=env.get("LIAISONS_FILE", ""),
            bank_signing_keys=_keyring(env.get("BANK_SIGNING_KEYS", ""), env.get("BANK_SIGNING_KEYS_FILE", "")),
            cipher_key=env.get("CIPHER_KEY", ""),
            cipher_required=_flag(env, "CIPHER_REQUIRED", False),
            chain_digest_interval=_number(env, "CHAIN_DIGEST_INTERVAL", 300.0),
        )

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    def require(self, *names: str) -> None:
        """Raise one error naming every required setting that is empty."""
        missing = [n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError("missing settings: " + ", ".join(missing))

    def topic(self, name: str) -> str:
        """The real Kafka topic name for a logical topic name."""
        return f"{self.topic_prefix}{name}"

    def postgres_env(self, schema: str) -> dict[str, str]:
        """The ``eventsourcing`` environment for a service owning ``schema``."""
        self.require("database_url")
        parts = urlsplit(self.database_url)
        if parts.scheme not in {"postgres", "postgresql"}:
            raise SettingsError(f"DATABASE_URL must be postgresql://..., got {parts.scheme!r}")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "5",
            "POSTGRES_CONN_MAX_AGE": "600",
            "POSTGRES_PRE_PING": "n",  # a ping per checkout doubled each lookup; a broken one fails, is retried
            "POSTGRES_LOCK_TIMEOUT": "10",
            "CREATE_TABLE": "y",
            "AGGREGATE_CACHE_MAXSIZE": str(self.aggregate_cache),
            "AGGREGATE_CACHE_FASTFORWARD": "n",
            **self.cipher_env(),
        }

    def cipher_env(self) -> dict[str, str]:
        """The ``eventsourcing`` cipher settings: stored event state AES-GCM encrypted when CIPHER_KEY is set."""
        if not self.cipher_key:
            if self.cipher_required:
                raise SettingsError("missing settings: CIPHER_KEY (CIPHER_REQUIRED is set)")
            return {}
        return {"CIPHER_TOPIC": "eventsourcing.cipher:AESCipher", "CIPHER_KEY": self.cipher_key}
