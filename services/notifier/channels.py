"""Delivery channels behind one interface: email (SMTP), SMS (HTTP gateway), agency webhooks.

Every send carries the message's deterministic idempotency key (the email's
``Message-ID``, the ``Idempotency-Key`` header of the gateway and webhooks), so
a receiver can drop the one repeat that a crash between "sent" and "recorded"
can cause. A channel raises :class:`DeliveryFailed` saying whether trying again
may help (``permanent=False``: timeouts, refused connections, 5xx, 429) or
not (a refused recipient, a 4xx).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from dataclasses import dataclass, field
from email.header import Header
from email.headerregistry import Address
from email.mime.text import MIMEText
from email.utils import formatdate
from typing import Any, Protocol

import aiosmtplib
import httpx

from services.notifier.config import NotifierSettings


@dataclass(frozen=True)
class Outgoing:
    """One message ready to go out on one channel."""

    message_id: str
    channel: str
    address: str
    subject: str | None
    body: str
    language: str
    audience: str
    payload: dict[str, Any] = field(default_factory=dict)  # the machine-readable facts (webhooks)

    @property
    def idempotency_key(self) -> str:
        """A stable opaque key for the message on this channel (no case reference in clear)."""
        return hashlib.sha256(f"{self.message_id}|{self.channel}".encode()).hexdigest()[:40]


class DeliveryFailed(Exception):
    """Raised when a channel did not take the message; ``permanent`` if retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason[:300]
        self.permanent = permanent


class Channel(Protocol):
    name: str

    async def send(self, message: Outgoing) -> str | None:
        """Deliver; the provider's reference if it gives one. Raises DeliveryFailed."""

    async def close(self) -> None: ...


class EmailChannel:
    name = "email"

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    def build(self, message: Outgoing) -> MIMEText:
        # The legacy (compat32) API on purpose: the default policy's header folding drops the space
        # between two RFC 2047 encoded words, which garbles long Arabic subjects (CPython email bug).
        email = MIMEText(message.body, "plain", "utf-8")  # the Arabic text first, as the catalogue renders it
        email["From"] = self.settings.smtp_from
        email["To"] = message.address
        email["Subject"] = Header(message.subject or "", "utf-8")
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = f"<{message.idempotency_key}@refund-ledger.mof>"
        email["Content-Language"] = message.language
        return email

    async def send(self, message: Outgoing) -> str | None:
        s = self.settings
        try:
            Address(addr_spec=message.address)
        except (ValueError, IndexError) as error:
            raise DeliveryFailed(f"invalid email address: {error}", permanent=True) from None
        email = self.build(message)
        try:
            await aiosmtplib.send(
                email, hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username or None,
                password=s.smtp_password or None, start_tls=s.smtp_starttls and not s.smtp_tls,
                use_tls=s.smtp_tls, timeout=s.send_timeout)
        except aiosmtplib.SMTPRecipientsRefused as error:
            raise DeliveryFailed(f"recipient refused: {error}", permanent=True) from None
        except aiosmtplib.SMTPResponseException as error:
            raise DeliveryFailed(f"SMTP {error.code}: {error.message}", permanent=500 <= error.code < 600) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as error:
            raise DeliveryFailed(f"SMTP unavailable: {type(error).__name__}: {error}") from None
        return email["Message-ID"]

    async def close(self) -> None:
        return None


class _HttpChannel:
    """A JSON POST with an idempotency key; 2xx = delivered."""

    name = "http"

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(timeout=settings.send_timeout)

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        try:
            response = await self.client.post(url, content=json.dumps(body, ensure_ascii=False).encode(),
                                              headers={"Content-Type": "application/json", **headers})
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"{self.name} unavailable: {type(error).__name__}: {error}") from None
        if response.is_success:
            try:
                reference = response.json().get("id")
            except (ValueError, AttributeError):
                reference = None
            return str(reference) if reference is not None else None
        retryable = response.status_code >= 500 or response.status_code in (408, 425, 429)
        raise DeliveryFailed(f"{self.name} answered HTTP {response.status_code}: {response.text[:200]}",
                             permanent=not retryable)

    async def close(self) -> None:
        await self.client.aclose()


class SmsChannel(_HttpChannel):
    """SMS through an HTTP gateway: ``POST SMS_GATEWAY_URL`` with ``{to, text, sender, message_id}``."""

    name = "sms"

    async def send(self, message: Outgoing) -> str | None:
        headers = {"Idempotency-Key": message.idempotency_key}
        if self.settings.sms_gateway_token:
            headers["Authorization"] = f"Bearer {self.settings.sms_gateway_token}"
        return await self._post(self.settings.sms_gateway_url, {
            "message_id": message.idempotency_key, "to": message.address, "text": message.body,
            "sender": self.settings.sms_sender, "language": message.language,
        }, headers)


class WebhookChannel(_HttpChannel):
    """An agency's own endpoint: the message and its facts as JSON, HMAC-signed when a key is set."""

    name = "webhook"

    async def send(self, message: Outgoing) -> str | None:
        body = {"message_id": message.idempotency_key, "subject": message.subject, "text": message.body,
                "language": message.language, **message.payload}
        headers = {"Idempotency-Key": message.idempotency_key}
        if self.settings.webhook_signing_key:
            raw = json.dumps(body, ensure_ascii=False).encode()
            digest = hmac.new(self.settings.webhook_signing_key.encode(), raw, hashlib.sha256).hexdigest()
            headers["X-Refund-Ledger-Signature"] = f"v1={digest}"
        return await self._post(message.address, body, headers)


def build_channels(settings: NotifierSettings) -> dict[str, Channel]:
    """The channels this deployment is configured for."""
    made: dict[str, Channel] = {}
    for name in settings.channels:
        made[name] = {"email": EmailChannel, "sms": SmsChannel, "webhook": WebhookChannel}[name](settings)
    return made
