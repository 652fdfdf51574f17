"""Audit API bearer tokens: what verifies, and every way a token or secret is refused.

``issue_token`` takes an explicit ``now``; ``verify_token`` reads the real clock unless given one,
so expiry is proved with a token issued at a fixed time long enough ago, or checked at a later
``now``. No sleeping.
"""

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest

from services.kit.auth import MIN_SECRET_BYTES, ROLES, InvalidToken, issue_token, verify_token

SECRET = "test-secret-" + "x" * 40  # test-only signing key
OTHER_SECRET = "another-test-secret-" + "y" * 40


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256(claims: dict, secret: str) -> str:
    """A JWT signed by hand, for tokens issue_token refuses to make."""
    signing_input = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def valid_claims(**changes) -> dict:
    now = int(datetime.now(timezone.utc).timestamp())
    return {"iss": "refund-ledger", "sub": "mof-auditor-17", "role": "auditor", "iat": now, "exp": now + 3600,
            **changes}


@pytest.mark.parametrize("role", ROLES)
def test_a_token_round_trips_role_and_subject(role):
    issued_at = datetime.now(timezone.utc).replace(microsecond=0)
    token = issue_token(SECRET, role, "mof-auditor-17", 3600, now=issued_at)

    principal = verify_token(SECRET, token)

    assert (principal.role, principal.subject) == (role, "mof-auditor-17")
    assert principal.expires_at == issued_at + timedelta(hours=1)


def test_rejects_an_expired_token():
    issued_at = datetime.now(timezone.utc) - timedelta(hours=9)
    token = issue_token(SECRET, "auditor", "mof-auditor-17", 8 * 3600, now=issued_at)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token)


def test_a_token_verified_before_still_expires():
    # the signature is checked once per token; its expiry at every request
    issued_at = datetime.now(timezone.utc)
    token = issue_token(SECRET, "agent", "cc-agent-4", 600, now=issued_at)
    assert verify_token(SECRET, token).subject == "cc-agent-4"
    assert verify_token(SECRET, token, now=issued_at + timedelta(minutes=9)).subject == "cc-agent-4"

    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token, now=issued_at + timedelta(minutes=10))


def test_a_token_verified_with_one_secret_is_refused_under_another():
    token = issue_token(SECRET, "admin", "mof-auditor-17", 3600)
    assert verify_token(SECRET, token).role == "admin"
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        verify_token(OTHER_SECRET, token)


def test_rejects_a_correctly_signed_token_whose_expiry_is_not_a_number():
    with pytest.raises(InvalidToken, match="exp"):
        verify_token(SECRET, hs256(valid_claims(exp="tomorrow"), SECRET))


def test_rejects_a_token_signed_with_another_secret():
    token = issue_token(OTHER_SECRET, "admin", "mof-auditor-17", 3600)
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        verify_token(SECRET, token)


def test_rejects_a_token_whose_payload_was_changed_after_signing():
    header, payload, signature = issue_token(SECRET, "auditor", "mof-auditor-17", 3600).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    promoted = _b64(json.dumps({**claims, "role": "admin"}).encode())
    with pytest.raises(InvalidToken):
        verify_token(SECRET, f"{header}.{promoted}.{signature}")


def test_rejects_a_correctly_signed_token_with_an_unknown_role():
    with pytest.raises(InvalidToken, match="unknown role 'superuser'"):
        verify_token(SECRET, hs256(valid_claims(role="superuser"), SECRET))


def test_rejects_a_correctly_signed_token_from_another_issuer():
    with pytest.raises(InvalidToken, match="issuer"):
        verify_token(SECRET, hs256(valid_claims(iss="someone-else"), SECRET))


def test_rejects_a_correctly_signed_token_without_expiry():
    claims = valid_claims()
    del claims["exp"]
    with pytest.raises(InvalidToken, match="exp"):
        verify_token(SECRET, hs256(claims, SECRET))


def test_rejects_an_unsigned_token():
    unsigned = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + _b64(
        json.dumps(valid_claims(role="admin")).encode()) + "."
    with pytest.raises(InvalidToken):
        verify_token(SECRET, unsigned)


def test_rejects_something_that_is_not_a_token():
    with pytest.raises(InvalidToken):
        verify_token(SECRET, "Basic YWRtaW46YWRtaW4=")


def test_will_not_issue_a_token_for_an_unknown_role():
    with pytest.raises(ValueError, match="unknown role 'root'"):
        issue_token(SECRET, "root", "mof-auditor-17", 3600)


def test_will_not_issue_with_a_secret_shorter_than_the_minimum():
    short = "k" * (MIN_SECRET_BYTES - 1)
    with pytest.raises(ValueError, match=rf"AUDIT_API_SECRET must be at least {MIN_SECRET_BYTES} bytes"):
        issue_token(short, "auditor", "mof-auditor-17", 3600)


def test_the_secret_minimum_counts_bytes_not_characters():
    with pytest.raises(ValueError, match="AUDIT_API_SECRET"):
        issue_token("é" * (MIN_SECRET_BYTES // 2 - 1), "auditor", "mof-auditor-17", 3600)  # 30 bytes
    assert issue_token("é" * (MIN_SECRET_BYTES // 2), "auditor", "mof-auditor-17", 3600)  # 32 bytes


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_will_not_verify_with_a_secret_shorter_than_the_minimum():
    # The audit API verifies with AUDIT_API_SECRET as configured; a short one must not
    # let anyone who guesses it mint tokens the API accepts.
    short = "changeme"
    with pytest.raises((InvalidToken, ValueError)):
        verify_token(short, hs256(valid_claims(role="admin"), short))
