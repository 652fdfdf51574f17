"""Personal data at rest: with CIPHER_KEY set, a dump of the services' schemas holds no
IBAN or national ID that was sent, and the bank refund journey still runs end to end
on a real PostgreSQL. The same dump of an unencrypted store does show them (the
check can fail)."""

from __future__ import annotations

import re
import subprocess

import pytest
from eventsourcing.cipher import AESCipher

from services.kit.embedded import postgres_bin_dir
from services.kit.envelope import SchemaRegistry, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.outbox import OutboxRelay
from services.kit.settings import SettingsError
from services.payments import application as payments
from services.payments import service as payments_service
from services.payments.domain import PaymentsError
from services.refunds import application as refunds
from services.refunds import service as refunds_service
from services.refunds.domain import RefundsError
from tests.conftest import fresh_database, make_settings
from tests.factories import (
    IBAN_BAD_CHECKSUM,
    IBAN_OWN,
    bank_completion,
    cloudevent,
    payment,
    refund_request,
)
from tests.integration.test_refund_saga import Saga, Side

pytestmark = pytest.mark.integration

PERSON, PAYER = "1012345672", "1000000008"
SENT = (IBAN_OWN, IBAN_BAD_CHECKSUM, PERSON, PAYER)


def journey(database_url: str, **env: str) -> Saga:
    """Payment, bank refund request, order, bank completion, and a rejected request, through the real
    ingress of the payments and refunds services; returns the settled saga (applications closed)."""
    settings = make_settings(database_url, **env)
    registry = SchemaRegistry(resolve_schemas_dir(settings))
    pay_app, ref_app = payments.PaymentsApplication(settings), refunds.RefundsApplication(settings)
    try:
        saga = Saga(
            Side(pay_app, Ingress(pay_app, "payments", registry, payments.handlers(pay_app), (PaymentsError,)),
                 OutboxRelay(pay_app, "payments", payments_service.translate, None, None)),
            Side(ref_app, Ingress(ref_app, "refunds", registry, refunds.handlers(ref_app), (RefundsError,)),
                 OutboxRelay(ref_app, "refunds", refunds_service.translate, None, None)),
            None, registry)
        saga.pay.feed("payments", [cloudevent("payment.recorded", payment("PAY-1", beneficiary_id=PERSON,
                                                                           payer_id=PAYER, amount=30000))])
        saga.ref.feed("refund-requests", [
            cloudevent("refund.requested", refund_request("RR-1", beneficiary_id=PERSON, amount=10000)),
            cloudevent("refund.requested", refund_request("RR-X", beneficiary_id=PERSON,
                                                          iban=IBAN_BAD_CHECKSUM))])  # rejected: stored raw
        settle(saga)
        saga.ref.feed("bank-returns", [cloudevent("refund.completed", bank_completion("RR-1", amount=10000))])
        settle(saga)
        assert saga.ref.app.case("RR-1")["state"] == "COMPLETED"
        assert saga.pay.app.balance(PERSON, "JAWAZAT", "PASSPORT_ISSUE")["refunded"] == 10000
    finally:
        pay_app.close()
        ref_app.close()
    return saga


def settle(saga: Saga) -> None:
    for _ in range(10):
        moved = False
        for side, other, followed in ((saga.pay, saga.ref, "ledger.payments"),
                                      (saga.ref, saga.pay, "ledger.refunds")):
            records = side.published()
            moved |= bool(records)
            other.feed(followed, [r.value for r in records if r.topic == followed])
        if not moved:
            return
    raise AssertionError("the saga did not settle")


def dump(database_url: str) -> str:
    """pg_dump of the two services' schemas, with every bytea hex literal decoded as well."""
    text = subprocess.run([str(postgres_bin_dir() / "pg_dump"), "--schema=payments", "--schema=refunds",
                           "--no-owner", database_url], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    decoded = [bytes.fromhex(h).decode("utf-8", "replace") for h in re.findall(r"\\\\x([0-9a-f]+)", text)]
    return "\n".join([text, *decoded])


def plain(text: str) -> list[str]:
    return [value for value in SENT if value in text]


def test_an_encrypted_store_dump_reveals_no_iban_or_id_and_the_journey_still_runs(postgres):
    encrypted, key = fresh_database(postgres), AESCipher.create_key(32)  # a fresh test-only key
    journey(encrypted, CIPHER_KEY=key)
    found = plain(dump(encrypted))
    print(f"encrypted store: {len(SENT)} sent values, {len(found)} found in the dump")
    assert found == []
    with_key = payments.PaymentsApplication(make_settings(encrypted, CIPHER_KEY=key))
    without_key = payments.PaymentsApplication(make_settings(encrypted))
    try:
        assert with_key.balance(PERSON, "JAWAZAT", "PASSPORT_ISSUE")["refunded"] == 10000
        with pytest.raises(ValueError):  # the stored state is ciphertext, not JSON
            without_key.balance(PERSON, "JAWAZAT", "PASSPORT_ISSUE")
    finally:
        with_key.close()
        without_key.close()


def test_the_dump_check_finds_them_in_a_store_without_a_key(postgres):
    clear = fresh_database(postgres)
    journey(clear)
    assert set(plain(dump(clear))) == set(SENT)


def test_the_prod_overlay_setting_refuses_to_start_without_a_key(database_url):
    with pytest.raises(SettingsError, match="CIPHER_KEY"):
        payments.PaymentsApplication(make_settings(database_url, CIPHER_REQUIRED="true"))
