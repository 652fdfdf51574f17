"""``refund-ledger up`` and ``refund-ledger run``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.processes import ServiceProcess
from services.cli.sinks import MailSink, SmsGateway
from services.kit import logs
from services.kit.auth import issue_token
from services.kit.embedded import EmbeddedKafka, EmbeddedPostgres, port_is_free
from services.kit.settings import Settings, SettingsError

log = logging.getLogger("refund-ledger.up")

#: Services whose web port (metrics/health) is WEB_PORT + offset under ``up``;
#: the audit service serves its API and console on AUDIT_API_PORT (8080).
WEB_PORT_OFFSETS = {"payments": 0, "visas": 1, "refunds": 2, "notifier": 3}
READY_TIMEOUT = 120.0


def run_service(settings: Settings, service: str) -> int:
    """Run one service in the foreground until SIGTERM."""
    from services.kit.runtime import build_worker, run_worker

    if service == "audit":
        from services.audit.service import build_worker as build_audit

        app, _ = build_audit(settings)
    else:
        app, _ = build_worker(_spec(service), settings)
    run_worker(app, settings, service)
    return 0


def _spec(service: str):
    if service == "payments":
        from services.payments.service import SPEC
    elif service == "visas":
        from services.visas.service import SPEC
    elif service == "refunds":
        from services.refunds.service import SPEC
    elif service == "notifier":
        from services.notifier.service import SPEC
    else:
        raise ValueError(f"unknown service {service!r}")
    return SPEC


def _stop_children(children: list[ServiceProcess], timeout: float) -> None:
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait_stopped(max(0.1, deadline - time.monotonic()))


def _wait_ready(children: list[ServiceProcess], stop: threading.Event, timeout: float) -> None:
    pending = {c.service for c in children}
    deadline = time.monotonic() + timeout
    while pending and not stop.is_set() and time.monotonic() < deadline:
        for child in children:
            if child.service in pending and child.ready():
                pending.discard(child.service)
        time.sleep(0.25)
    if pending:
        raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))}")


@dataclass
class LocalStack:
    """What ``up`` started, so that it can stop exactly that, in order."""

    run_dir: Path
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    children: list[ServiceProcess] = field(default_factory=list)
    keys_file: Path | None = None
    demo_keys: bool = False
    mail: MailSink | None = None
    sms: SmsGateway | None = None
    channel_env: dict[str, str] = field(default_factory=dict)

    def start_servers(self, settings: Settings) -> Settings:
        """Embedded broker and database unless configured; the settings that point at them."""
        if not settings.kafka_bootstrap_servers:
            self.kafka = EmbeddedKafka(port=settings.embedded_kafka_port, log_dir=self.run_dir).start()
            settings = settings.with_(kafka_bootstrap_servers=self.kafka.bootstrap_servers,
                                      kafka_profile="embedded")
        if not settings.database_url:
            self.postgres = EmbeddedPostgres().start()
            settings = settings.with_(database_url=self.postgres.url)
        settings = settings.with_(audit_api_secret=settings.audit_api_secret or secrets.token_urlsafe(48))
        self.start_receivers()
        return self.bank_keys(settings)

    def start_receivers(self) -> None:
        """A local mail server and SMS gateway for the notifier, unless real ones are configured:
        what citizens and liaisons would receive is written to ``run_dir/outbox``."""
        outbox = self.run_dir / "outbox"
        outbox.mkdir(exist_ok=True)
        if not os.environ.get("SMTP_HOST"):
            self.mail = MailSink(outbox=outbox).start()
            self.channel_env |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.mail.port), "SMTP_STARTTLS": "false"}
        if not os.environ.get("SMS_GATEWAY_URL"):
            self.sms = SmsGateway(outbox=outbox).start()
            self.channel_env["SMS_GATEWAY_URL"] = self.sms.url

    def bank_keys(self, settings: Settings) -> Settings:
        """Configured bank signing keys, or DEMO-ONLY keys generated now for this run (never committed),
        written to ``run_dir`` so that the services and ``simulate`` share them."""
        keys = settings.bank_signing_keys
        if not keys:
            from services.cli.simulate import BANK_CODES
            from services.kit.signatures import demo_keys

            keys = demo_keys(BANK_CODES)
            self.demo_keys = True
        self.keys_file = self.run_dir / "bank-signing-keys.json"
        self.keys_file.touch(mode=0o600)
        self.keys_file.write_text(json.dumps(keys, indent=1), encoding="utf-8")
        return settings.with_(bank_signing_keys=keys)

    def start_services(self, settings: Settings) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": settings.database_url,
            "AUDIT_API_SECRET": settings.audit_api_secret,
            "KAFKA_PROFILE": settings.kafka_profile,
            "LOG_LEVEL": settings.log_level,
            "BANK_SIGNING_KEYS": "",
            "BANK_SIGNING_KEYS_FILE": str(self.keys_file or ""),
            **self.channel_env,
        }
        for name, host, port in service_ports(settings):
            self.children.append(ServiceProcess(name, {**env, "DATA_DIR": str(self.run_dir / name)},
                                                port, self.run_dir / f"{name}.log", host))
        for child in self.children:
            child.start()

    def supervise(self, stop: threading.Event) -> int:
        """Wait for ``stop``; 1 if a service died on its own."""
        while not stop.is_set():
            for child in self.children:
                if child.exited() is not None:
                    log.error("%s exited with %s; stopping (log: %s)", child.service, child.exited(),
                              child.log_path)
                    return 1
            stop.wait(0.5)
        return 0

    def stop(self, grace: float) -> None:
        """Services first (they drain and commit), then the broker and the database."""
        _stop_children(self.children, grace)
        for receiver in (self.mail, self.sms):
            if receiver is not None:
                receiver.stop()
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()


def service_ports(settings: Settings) -> list[tuple[str, str, int]]:
    """(service, host, port) of each service under ``up``: metrics/health on
    WEB_PORT + offset, the audit API and console on AUDIT_API_PORT."""
    ports = [(name, settings.web_host, settings.web_port + offset) for name, offset in WEB_PORT_OFFSETS.items()]
    return [*ports, ("audit", settings.audit_api_host, settings.audit_api_port)]


def check_ports_free(settings: Settings) -> None:
    """Refuse to start, before anything is started, when a service's port is taken
    (otherwise that one service dies seconds later with 'address already in use')."""
    taken = [f"{host}:{port} ({name})" for name, host, port in service_ports(settings)
             if not port_is_free(host, port, reuse_address=True)]
    if taken:
        raise SettingsError(f"port in use: {', '.join(taken)}; free it or choose others with WEB_PORT "
                            f"(services use WEB_PORT to WEB_PORT+{len(WEB_PORT_OFFSETS) - 1}) "
                            "and AUDIT_API_PORT")


def up(settings: Settings, demo: bool = True, demo_rate: float = 5.0) -> int:
    """The whole stack on this machine; Ctrl-C / SIGTERM stops everything it started.

    Children run in their own sessions, so a terminal's Ctrl-C reaches only
    this process, which stops the services first and the broker and database
    last (a service never loses its broker mid-shutdown).
    """
    logs.configure(settings.log_level, "up")
    check_ports_free(settings)
    started = time.monotonic()
    stop = threading.Event()

    def interrupt(*_) -> None:  # Ctrl-C or SIGTERM, even where a shell ignored SIGINT for us
        if not stop.is_set():
            stop.set()
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    run_dir = Path(settings.data_dir or tempfile.mkdtemp(prefix="refund-ledger-up-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    stack, demo_thread = LocalStack(run_dir), None
    try:
        settings = stack.start_servers(settings)
        stack.start_services(settings)
        _wait_ready(stack.children, stop, READY_TIMEOUT)
        token = issue_token(settings.audit_api_secret, "auditor", "up", settings.token_ttl_seconds)
        _print_banner(settings, stack, token, time.monotonic() - started)
        if demo:
            from services.cli.simulate import run_in_thread

            demo_thread = run_in_thread(settings, rate=demo_rate, stop=stop)
        return stack.supervise(stop)
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        if demo_thread is not None:
            demo_thread.join(10)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop(settings.shutdown_grace + 5)
        print("refund-ledger: stopped everything it started", file=sys.stderr)


def _print_banner(settings: Settings, stack: LocalStack, token: str, seconds: float) -> None:
    lines = [
        "",
        f"refund-ledger is up ({seconds:.0f} s). Ctrl-C stops everything.",
        f"  Kafka            {settings.kafka_bootstrap_servers}"
        + ("  (embedded Tansu, in memory)" if stack.kafka else ""),
        f"  PostgreSQL       {settings.database_url}" + ("  (embedded, temporary)" if stack.postgres else ""),
    ]
    for child in stack.children:
        what = "audit API + console" if child.service == "audit" else "metrics/health"
        lines.append(f"  {child.service:<16} {child.url}  ({what}, pid {child.pid})")
    base = f"http://{settings.audit_api_host}:{settings.audit_api_port}"
    lines += [
        f"  OpenAPI          {base}/openapi.json",
        f"  Logs             {stack.run_dir}/*.log",
        f"  Messages sent    {stack.run_dir}/outbox/mail.log, sms.log"
        + ("  (local mail server and SMS gateway)" if stack.mail or stack.sms else ""),
        f"  Bank keys        {stack.keys_file}" + ("  (DEMO ONLY: generated for this run)" if stack.demo_keys else ""),
        f"  simulate with    BANK_SIGNING_KEYS_FILE={stack.keys_file} refund-ledger simulate --count 1000",
        "",
        "An auditor token for this session:",
        f"  export TOKEN={token}",
        f"  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/payments/PAYMENT_ID",
        "",
    ]
    print("\n".join(lines), flush=True)
    with contextlib.suppress(OSError):
        print(json.dumps({"event": "ready", "seconds": round(seconds, 1)}), file=sys.stderr, flush=True)
