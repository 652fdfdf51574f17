"""Local stand-ins for the outside world's message receivers, on loopback.

``MailSink`` is a real SMTP server (aiosmtpd) and ``SmsGateway`` a real HTTP
server speaking the SMS gateway protocol the notifier uses (JSON POST with an
``Idempotency-Key``). ``refund-ledger up`` runs both so a demo shows what the
citizens and liaisons receive (``<run dir>/outbox/``); the tests read what
arrives. Both record every delivery, repeats included, so a test can prove
that nothing was sent twice. The gateway can be taken down and brought back
on the same port, like a provider outage.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from services.kit.embedded import free_port


@dataclass(frozen=True)
class Mail:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    language: str


class _MailHandler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        if self.sink.refuse is not None and self.sink.refuse(address):
            return "550 5.1.1 Recipient address rejected: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(preferencelist=("plain",))
        self.sink.add(Mail(message_id=str(parsed["Message-ID"]), sender=envelope.mail_from,
                           recipients=tuple(envelope.rcpt_tos), subject=str(parsed["Subject"] or ""),
                           body=body.get_content() if body is not None else "",
                           language=str(parsed["Content-Language"] or "")))
        return "250 Message accepted for delivery"


class MailSink:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self, port: int = 0, outbox: Path | None = None,
                 refuse: Callable[[str], bool] | None = None) -> None:
        self.port = port or free_port()
        self.outbox = outbox
        self.refuse = refuse  # addresses this server answers 550 (no such mailbox), like a real one
        self.received: list[Mail] = []
        self._lock = threading.Lock()
        self._controller = Controller(_MailHandler(self), hostname="127.0.0.1", port=self.port)

    def add(self, mail: Mail) -> None:
        with self._lock:
            self.received.append(mail)
        if self.outbox is not None:
            with (self.outbox / "mail.log").open("a", encoding="utf-8") as log:
                log.write(f"To: {', '.join(mail.recipients)}\nSubject: {mail.subject}\n\n{mail.body}\n{'=' * 72}\n")

    def messages(self) -> list[Mail]:
        with self._lock:
            return list(self.received)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SmsGateway:
    """An HTTP SMS gateway on 127.0.0.1: ``POST /sms`` with ``{to, text, sender, message_id}``."""

    def __init__(self, port: int = 0, outbox: Path | None = None) -> None:
        self.port = port or free_port()
        self.outbox = outbox
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    sms = json.loads(self.rfile.read(length))
                    if self.path != "/sms" or not sms.get("to") or not sms.get("text"):
                        raise ValueError("POST /sms with to and text")
                except ValueError as error:
                    self._answer(400, {"error": str(error)})
                    return
                sms["idempotency_key"] = self.headers.get("Idempotency-Key")
                with gateway._lock:
                    gateway.received.append(sms)
                    reference = f"sms-{len(gateway.received)}"
                if gateway.outbox is not None:
                    with (gateway.outbox / "sms.log").open("a", encoding="utf-8") as log:
                        log.write(f"{sms['to']}: {sms['text']}\n")
                self._answer(202, {"id": reference})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def start(self) -> SmsGateway:
        """Listen (again) on the same port."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="sms-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start`` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SmsGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
