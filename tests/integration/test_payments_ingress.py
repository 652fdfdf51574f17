"""The tracked ingress applying payments batches to a real PostgreSQL event store."""

from dataclasses import replace
from datetime import timedelta

import pytest

from services.kit.envelope import SchemaRegistry, resolve_schemas_dir
from services.kit.identity import with_check_digit
from services.kit.ingress import Ingress
from services.kit.rejections import Rejection
from services.payments.application import PaymentsApplication, handlers, timer_handlers
from services.payments.domain import Payment, PaymentsError
from tests.factories import (
    IBAN_BAD_CHECKSUM,
    IBAN_OTHER,
    PAID_AT,
    Messages,
    acknowledgement,
    charge,
    cloudevent,
    payment,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def app(db_settings):
    application = PaymentsApplication(db_settings)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def ingress(app, db_settings):
    return Ingress(app=app, service="payments", registry=SchemaRegistry(resolve_schemas_dir(db_settings)),
                   handlers=handlers(app), rejectable=(PaymentsError,), timer_handlers=timer_handlers(app))


def stored_rejections(app) -> list[Rejection.Recorded]:
    return [e for e in (app.mapper.to_domain_event(n) for n in app.notifications_after(0, 1000))
            if isinstance(e, Rejection.Recorded)]


def test_a_payment_credits_the_balance_of_its_beneficiary_service(app, ingress):
    msg = Messages()
    outcome = ingress.apply([msg(cloudevent("payment.recorded", payment(amount=30000))),
                             msg(cloudevent("fee.charged", charge(amount=20000)))])
    assert outcome.applied == 2 and not outcome.rejected
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["available"] == 10000


def test_a_redelivered_record_is_skipped_by_its_kafka_position(app, ingress):
    msg = Messages()
    record = msg(cloudevent("payment.recorded", payment()))
    ingress.apply([record])
    ingress.forget_cached_state()  # as after a restart: positions come from the database
    outcome = ingress.apply([record])
    assert (outcome.skipped_offsets, outcome.applied) == (1, 0)
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 30000


def test_the_same_cloudevent_id_at_a_new_offset_counts_once(app, ingress):
    msg = Messages()
    value = cloudevent("payment.recorded", payment(), event_id="bank-80-0001")
    first = ingress.apply([msg(value)])
    again = ingress.apply([msg(value), msg(value)])
    assert first.applied == 1
    assert (again.applied, again.duplicates) == (0, 2)
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 30000


def test_the_same_payment_under_a_new_cloudevent_id_counts_once(app, ingress):
    msg = Messages()
    ingress.apply([msg(cloudevent("payment.recorded", payment()))])
    outcome = ingress.apply([msg(cloudevent("payment.recorded", payment()))])
    assert outcome.applied == 1 and not outcome.rejected  # accepted, changes nothing
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 30000


def test_rejects_a_reused_cloudevent_id_with_different_content(app, ingress):
    msg = Messages()
    ingress.apply([msg(cloudevent("payment.recorded", payment(amount=100), event_id="e-1"))])
    outcome = ingress.apply([msg(cloudevent("payment.recorded", payment(amount=999), event_id="e-1"))])
    assert outcome.rejected == {"duplicate_id_conflict": 1}
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 100


def test_bad_input_is_rejected_with_a_reason_and_the_rest_of_the_batch_applies(app, ingress):
    msg = Messages()
    batch = [
        msg(b'{"specversion": "1.0", "id": '),
        msg(cloudevent("payment.recorded", {**payment("PAY-X"), "amount": -5})),
        msg(cloudevent("payment.teleported", {"x": 1})),
        msg(cloudevent("payment.recorded", payment("PAY-Y", payer_iban=IBAN_BAD_CHECKSUM))),
        msg(b"\xff\xfe not utf-8"),
        msg(cloudevent("visa.issued", {"sponsor_id": "1012345672"})),
        msg(cloudevent("payment.acknowledged", acknowledgement("PAY-NEVER"))),
        msg(cloudevent("payment.recorded", payment("PAY-OK", payer_id="2098765437", payer_iban=IBAN_OTHER))),
        msg(None),
    ]
    outcome = ingress.apply(batch)
    assert outcome.rejected == {"malformed_json": 1, "schema_violation": 1, "unknown_type": 1,
                                "invalid_iban": 1, "invalid_utf8": 1, "wrong_topic": 1,
                                "unknown_payment": 1, "empty_message": 1}
    assert outcome.applied == 1
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 30000
    rejections = stored_rejections(app)
    assert sorted(r.offset for r in rejections) == [0, 1, 2, 3, 4, 5, 6, 8]
    schema = next(r for r in rejections if r.reason_code == "schema_violation")
    assert "amount" in schema.reason and schema.original["offset"] == 1
    garbled = next(r for r in rejections if r.reason_code == "invalid_utf8")
    assert garbled.original["value_encoding"] == "base64"


def test_a_rejected_message_leaves_no_partial_change_behind(app, ingress):
    msg = Messages()
    outcome = ingress.apply([
        msg(cloudevent("payment.recorded", payment(amount=5000))),
        msg(cloudevent("fee.charged", charge("CHG-BIG", amount=9000))),
        msg(cloudevent("fee.charged", charge("CHG-OK", amount=4000))),
    ])
    assert outcome.rejected == {"insufficient_balance": 1}
    balance = app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")
    assert (balance["charged"], balance["available"]) == (4000, 1000)


def test_balances_are_rebuilt_from_the_event_store(app, ingress, db_settings):
    msg = Messages()
    ingress.apply([msg(cloudevent("payment.recorded", payment("P1", amount=700))),
                   msg(cloudevent("payment.recorded", payment("P2", amount=300))),
                   msg(cloudevent("fee.charged", charge("C1", amount=250)))])
    fresh = PaymentsApplication(db_settings)  # no cache: aggregates replayed from stored events
    try:
        assert fresh.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE") == {
            "beneficiary_id": "1012345672", "agency": "JAWAZAT", "service_code": "PASSPORT_ISSUE",
            "credited": 1000, "charged": 250, "held": 0, "refunded": 0, "available": 750}
    finally:
        fresh.close()


def test_an_unacknowledged_payment_is_flagged_when_its_timer_fires_once_across_restarts(app, ingress, db_settings):
    msg = Messages()
    ingress.apply([msg(cloudevent("payment.recorded", payment("LATE-1")))])
    [timer] = app.ingress_recorder.timers()
    assert (timer.name, timer.key) == ("payment.unreflected", "LATE-1")
    assert timer.due_at == PAID_AT + timedelta(hours=24)

    early = replace(ingress, clock=lambda: timer.due_at - timedelta(seconds=1))
    assert early.fire_timers() == 0
    due = replace(ingress, clock=lambda: timer.due_at + timedelta(minutes=1))
    assert due.fire_timers() == 1
    assert app.ingress_recorder.timers() == []

    restarted = PaymentsApplication(db_settings)  # a new process sees the same, fired-once state
    try:
        again = replace(ingress, app=restarted, clock=lambda: timer.due_at + timedelta(days=2))
        assert again.fire_timers() == 0
        ingress.forget_cached_state()
        ingress.apply([msg(cloudevent("payment.acknowledged", acknowledgement("LATE-1", PAID_AT + timedelta(days=2))))])
        kinds = [type(e).__name__ for e in restarted.events.get(Payment.create_id("LATE-1"))]
    finally:
        restarted.close()
    assert kinds == ["Recorded", "Unreflected", "Acknowledged", "UnreflectedResolved"]


def test_an_acknowledgement_in_time_cancels_the_timer(app, ingress):
    msg = Messages()
    ingress.apply([msg(cloudevent("payment.recorded", payment("ONTIME-1"))),
                   msg(cloudevent("payment.acknowledged", acknowledgement("ONTIME-1")))])
    assert app.ingress_recorder.timers() == []


class CountingPayments(PaymentsApplication):
    """Counts the event store's reads: one aggregate at a time (``find``) and a batch at once."""

    name = "payments"  # the same schema as the service's

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.finds = self.batch_reads = 0

    def find(self, aggregate_id):
        self.finds += 1
        return super().find(aggregate_id)

    def find_many(self, aggregate_ids):
        self.batch_reads += 1
        return super().find_many(aggregate_ids)


@pytest.fixture
def counting(db_settings):
    application = CountingPayments(db_settings)
    try:
        yield application, Ingress(app=application, service="payments",
                                   registry=SchemaRegistry(resolve_schemas_dir(db_settings)),
                                   handlers=handlers(application), rejectable=(PaymentsError,))
    finally:
        application.close()


def test_a_batch_loads_the_aggregates_its_events_read_in_one_query(counting, db_settings):
    app, ingress = counting
    msg = Messages()
    people = [with_check_digit(f"10{n:07d}") for n in range(30)]
    first = ingress.apply([msg(cloudevent("payment.recorded", payment(payment_id=f"P-{n}", beneficiary_id=person,
                                                                    payer_id=person)))
                           for n, person in enumerate(people)])
    assert first.applied == 30 and (app.batch_reads, app.finds) == (1, 0), "60 new aggregates: one read, no finds"
    # a restarted service (nothing cached) acknowledges them and charges fees against the stored balances
    app.repository.cache.clear()
    app.batch_reads = 0
    second = ingress.apply([msg(cloudevent("payment.acknowledged", acknowledgement(payment_id=f"P-{n}")))
                            for n in range(30)]
                           + [msg(cloudevent("fee.charged", charge(charge_id=f"C-{n}", beneficiary_id=person,
                                                                   amount=10000)))
                              for n, person in enumerate(people)])
    assert second.applied == 60 and not second.rejected
    assert (app.batch_reads, app.finds) == (1, 0)
    fresh = PaymentsApplication(db_settings)  # what is stored, read the ordinary way
    try:
        for person in people:
            assert fresh.balance(person, "JAWAZAT", "PASSPORT_ISSUE")["available"] == 20000
        assert all(fresh.find(Payment.create_id(f"P-{n}")).acknowledged_at is not None for n in range(30))
    finally:
        fresh.close()


OTHER_PERSON = with_check_digit("100000000")


def test_a_message_rolled_back_leaves_a_preloaded_new_aggregate_absent(counting):
    """The second payment in the batch reuses the first's id with other facts: it is rejected and its
    balance, created only by it, must not be saved; a later batch still finds nothing there."""
    app, ingress = counting
    msg = Messages()
    outcome = ingress.apply([
        msg(cloudevent("payment.recorded", payment(payment_id="P-1"))),
        msg(cloudevent("payment.recorded", payment(payment_id="P-1", beneficiary_id=OTHER_PERSON,
                                                   payer_id=OTHER_PERSON))),
    ])
    assert outcome.applied == 1 and sum(outcome.rejected.values()) == 1
    assert app.balance(OTHER_PERSON, "JAWAZAT", "PASSPORT_ISSUE") is None
    assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 30000
