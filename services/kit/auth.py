"""Bearer tokens for the audit API: HS256 JWTs signed with ``AUDIT_API_SECRET``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import jwt

ISSUER = "refund-ledger"
ROLES = ("auditor", "agent", "jawazat", "mofa", "admin")
MIN_SECRET_BYTES = 32


class InvalidToken(Exception):
    """Raised when a bearer token is missing, malformed, forged or expired."""


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    expires_at: datetime


def check_secret(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"AUDIT_API_SECRET must be at least {MIN_SECRET_BYTES} bytes")


def issue_token(secret: str, role: str, subject: str, ttl_seconds: int,
                now: datetime | None = None) -> str:
    check_secret(secret)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    now = now or datetime.now(timezone.utc)
    claims = {"iss": ISSUER, "sub": subject, "role": role, "iat": now,
              "exp": now + timedelta(seconds=ttl_seconds)}
    return jwt.encode(claims, secret, algorithm="HS256")


VERIFIED_TOKENS = 4096  # verified tokens remembered: a caller's token is checked once, not at every request


def verify_token(secret: str, token: str, now: datetime | None = None) -> Principal:
    """The caller a token names, if its signature, issuer, claims and role hold and it has not expired.

    The signature is checked once per token (HMAC and JSON decoding cost about as much as the rest of a
    case lookup); its expiry at every call, against ``now`` (default: the clock).
    """
    principal = _verified(secret, token)
    if principal.expires_at <= (now or datetime.now(timezone.utc)):
        raise InvalidToken("Signature has expired")
    return principal


@lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(secret: str, token: str) -> Principal:
    """Everything about a token but its expiry; a token that fails raises, and is not remembered."""
    check_secret(secret)  # a short key would make every token guessable
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": False})
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from None
    role, expires = claims.get("role"), claims["exp"]
    if role not in ROLES:
        raise InvalidToken(f"unknown role {role!r}")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise InvalidToken("Expiration Time claim (exp) must be a number")
    return Principal(subject=str(claims["sub"]), role=role,
                     expires_at=datetime.fromtimestamp(expires, timezone.utc))
