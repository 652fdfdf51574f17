"""``refund-ledger up`` and ``refund-ledger run``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from services.kit import logs
from services.kit.auth import issue_token
from services.kit.embedded import EmbeddedKafka, EmbeddedPostgres, die_with_parent
from services.kit.settings import Settings

log = logging.getLogger("refund-ledger.up")

#: Web ports of the services under ``up`` (the audit API is AUDIT_API_PORT, 8080).
WEB_PORTS = {"payments": 6066, "visas": 6067, "refunds": 6068, "notifier": 6069}
EMBEDDED_KAFKA_PORT = 9092


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


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    url: str


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_children(children: list[Child], timeout: float = 15.0) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(remaining)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(5)


def up(settings: Settings, demo: bool = True, demo_rate: float = 5.0) -> int:
    """The whole stack on this machine; Ctrl-C / SIGTERM stops everything it started."""
    logs.configure(settings.log_level, "up")
    started = time.monotonic()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    kafka = postgres = None
    children: list[Child] = []
    try:
        if not settings.kafka_bootstrap_servers:
            kafka = EmbeddedKafka(port=EMBEDDED_KAFKA_PORT).start()
            settings = settings.with_(kafka_bootstrap_servers=kafka.bootstrap_servers)
        if not settings.database_url:
            postgres = EmbeddedPostgres().start()
            settings = settings.with_(database_url=postgres.url)
        secret = settings.audit_api_secret or secrets.token_urlsafe(48)
        settings = settings.with_(audit_api_secret=secret)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": settings.database_url,
            "AUDIT_API_SECRET": secret,
            "KAFKA_PROFILE": settings.kafka_profile if not kafka else "embedded",
            "LOG_LEVEL": settings.log_level,
        }
        for name, port in WEB_PORTS.items():
            children.append(Child(name, subprocess.Popen(
                [sys.executable, "-m", "services.cli", "run", name], env={**env, "WEB_PORT": str(port)},
                preexec_fn=die_with_parent),  # noqa: PLW1509 - only calls prctl
                f"http://{settings.web_host}:{port}"))
        children.append(Child("audit", subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "audit"], env=env,
            preexec_fn=die_with_parent),  # noqa: PLW1509 - only calls prctl
            f"http://{settings.audit_api_host}:{settings.audit_api_port}"))
        pending = {c.name for c in children}
        deadline = time.monotonic() + 120
        while pending and not stop.is_set() and time.monotonic() < deadline:
            for child in children:
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
                if child.name in pending and _ready(child.url):
                    pending.discard(child.name)
            time.sleep(0.25)
        if pending:
            raise RuntimeError(f"not ready after 120 s: {', '.join(sorted(pending))}")
        token = issue_token(secret, "auditor", "up", settings.token_ttl_seconds)
        _print_banner(settings, children, kafka, postgres, token, time.monotonic() - started)
        demo_thread = None
        if demo:
            from services.cli.simulate import run_in_thread

            demo_thread = run_in_thread(settings, rate=demo_rate, stop=stop)
        while not stop.is_set():
            for child in children:
                if child.process.poll() is not None:
                    log.error("%s exited with %s; stopping", child.name, child.process.returncode)
                    stop.set()
            stop.wait(0.5)
        if demo_thread is not None:
            demo_thread.join(10)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        _stop_children(children)
        if kafka is not None:
            kafka.stop()
        if postgres is not None:
            postgres.stop()
        print("refund-ledger: stopped everything it started", file=sys.stderr)


def _print_banner(settings: Settings, children: list[Child], kafka, postgres, token: str,
                  seconds: float) -> None:
    lines = [
        "",
        f"refund-ledger is up ({seconds:.0f} s). Ctrl-C stops everything.",
        f"  Kafka            {settings.kafka_bootstrap_servers}"
        + ("  (embedded Tansu, in memory)" if kafka else ""),
        f"  PostgreSQL       {settings.database_url}" + ("  (embedded, temporary)" if postgres else ""),
    ]
    for child in children:
        what = "audit API + console" if child.name == "audit" else "metrics/health"
        lines.append(f"  {child.name:<16} {child.url}  ({what}, pid {child.process.pid})")
    base = f"http://{settings.audit_api_host}:{settings.audit_api_port}"
    lines += [
        f"  OpenAPI          {base}/openapi.json",
        "",
        "An auditor token for this session:",
        f"  export TOKEN={token}",
        f"  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/payments/PAYMENT_ID",
        "",
    ]
    print("\n".join(lines), flush=True)
    with contextlib.suppress(OSError):
        print(json.dumps({"event": "ready", "seconds": round(seconds, 1)}), file=sys.stderr, flush=True)
