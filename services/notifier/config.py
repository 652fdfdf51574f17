"""The notifier's own settings: its channels and its timings (README "Notifier")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from services.kit.settings import SettingsError, _flag, _number

CHANNELS = ("email", "sms", "webhook")


@dataclass(frozen=True)
class NotifierSettings:
    # Email over SMTP. No SMTP_HOST = no email channel.
    smtp_host: str = ""                       # SMTP_HOST
    smtp_port: int = 587                      # SMTP_PORT
    smtp_username: str = ""                   # SMTP_USERNAME
    smtp_password: str = field(default="", repr=False)  # SMTP_PASSWORD (from a Secret)
    smtp_starttls: bool = True                # SMTP_STARTTLS: upgrade with STARTTLS (port 587)
    smtp_tls: bool = False                    # SMTP_TLS: implicit TLS (port 465)
    smtp_from: str = "MoF Refund Ledger <no-reply@refund-ledger.example>"  # SMTP_FROM
    # SMS through an HTTP gateway. No SMS_GATEWAY_URL = no SMS channel.
    sms_gateway_url: str = ""                 # SMS_GATEWAY_URL
    sms_gateway_token: str = field(default="", repr=False)  # SMS_GATEWAY_TOKEN (bearer, from a Secret)
    sms_sender: str = "MOF"                   # SMS_SENDER: the registered sender name
    # Agency webhooks (URLs in the liaison registry), signed when a key is set.
    webhook_signing_key: str = field(default="", repr=False)  # WEBHOOK_SIGNING_KEY
    send_timeout: float = 10.0                # NOTIFIER_SEND_TIMEOUT seconds per attempt
    # Timings.
    coalesce: timedelta = timedelta(seconds=30)           # NOTIFIER_COALESCE_SECONDS
    retry_base: timedelta = timedelta(seconds=5)          # NOTIFIER_RETRY_BASE_SECONDS
    retry_max: timedelta = timedelta(minutes=15)          # NOTIFIER_RETRY_MAX_SECONDS
    max_attempts: int = 12                                # NOTIFIER_MAX_ATTEMPTS
    reminder_after: timedelta = timedelta(days=2)         # NOTIFIER_REMINDER_SECONDS
    max_reminders: int = 3                                # NOTIFIER_MAX_REMINDERS
    contact_wait: timedelta = timedelta(days=7)           # NOTIFIER_CONTACT_WAIT_SECONDS
    dispatch_interval: float = 1.0                        # NOTIFIER_DISPATCH_INTERVAL seconds
    concurrency: int = 8                                  # NOTIFIER_CONCURRENCY sends at once

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels this deployment can send on."""
        configured = {"email": bool(self.smtp_host), "sms": bool(self.sms_gateway_url), "webhook": True}
        return tuple(c for c in CHANNELS if configured[c])

    def backoff(self, attempt: int) -> timedelta:
        """How long to wait after failed attempt number ``attempt`` (1, 2, ...): doubling, capped."""
        return min(self.retry_base * (2 ** max(0, attempt - 1)), self.retry_max)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifierSettings:
        env = dict(os.environ if env is None else env)

        def seconds(key: str, default: timedelta) -> timedelta:
            return timedelta(seconds=_number(env, key, default.total_seconds()))

        settings = cls(
            smtp_host=env.get("SMTP_HOST", ""),
            smtp_port=_number(env, "SMTP_PORT", 587, int),
            smtp_username=env.get("SMTP_USERNAME", ""),
            smtp_password=env.get("SMTP_PASSWORD", ""),
            smtp_starttls=_flag(env, "SMTP_STARTTLS", True),
            smtp_tls=_flag(env, "SMTP_TLS", False),
            smtp_from=env.get("SMTP_FROM", cls.smtp_from),
            sms_gateway_url=env.get("SMS_GATEWAY_URL", ""),
            sms_gateway_token=env.get("SMS_GATEWAY_TOKEN", ""),
            sms_sender=env.get("SMS_SENDER", "MOF"),
            webhook_signing_key=env.get("WEBHOOK_SIGNING_KEY", ""),
            send_timeout=_number(env, "NOTIFIER_SEND_TIMEOUT", 10.0),
            coalesce=seconds("NOTIFIER_COALESCE_SECONDS", cls.coalesce),
            retry_base=seconds("NOTIFIER_RETRY_BASE_SECONDS", cls.retry_base),
            retry_max=seconds("NOTIFIER_RETRY_MAX_SECONDS", cls.retry_max),
            max_attempts=_number(env, "NOTIFIER_MAX_ATTEMPTS", 12, int),
            reminder_after=seconds("NOTIFIER_REMINDER_SECONDS", cls.reminder_after),
            max_reminders=_number(env, "NOTIFIER_MAX_REMINDERS", 3, int),
            contact_wait=seconds("NOTIFIER_CONTACT_WAIT_SECONDS", cls.contact_wait),
            dispatch_interval=_number(env, "NOTIFIER_DISPATCH_INTERVAL", 1.0),
            concurrency=_number(env, "NOTIFIER_CONCURRENCY", 8, int),
        )
        if settings.smtp_tls and settings.smtp_starttls and env.get("SMTP_STARTTLS"):
            raise SettingsError("SMTP_TLS and SMTP_STARTTLS: choose one (implicit TLS or STARTTLS)")
        if settings.max_attempts < 1:
            raise SettingsError("NOTIFIER_MAX_ATTEMPTS must be at least 1")
        return settings
