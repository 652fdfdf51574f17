"""The tracked ingress applying ``visas`` and ``cancellations`` batches to a real
PostgreSQL event store, and every CloudEvent the visas outbox publishes
checked against ``schemas/``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from services.kit.envelope import Envelope, RawMessage, SchemaRegistry, parse, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.outbox import OutboxRelay
from services.kit.rejections import Rejection
from services.visas.application import VisasApplication, handlers
from services.visas.domain import Visa, VisasError
from services.visas.service import translate
from tests.factories import Messages, cloudevent

pytestmark = pytest.mark.integration

SPONSOR = "1012345672"
ISSUED_AT = datetime(2026, 11, 1, 11, 0, tzinfo=timezone(timedelta(hours=3)))
KEY = {"sponsor_id": SPONSOR, "export_number": "1448001238", "serial_number": "3"}


def issued(serial: str = "3", *, visa_type: str = "DOMESTIC_WORKER", fee: int = 200000,
           at: datetime = ISSUED_AT) -> dict[str, Any]:
    return {**KEY, "serial_number": serial, "visa_type": visa_type, "payment_id": f"SADAD-VISA-{serial}",
            "fee": fee, "issued_at": at.isoformat()}


def requested(serial: str = "3", *, after: timedelta = timedelta(hours=5), channel: str = "MUSANED") -> dict[str, Any]:
    return {**KEY, "serial_number": serial, "requested_at": (ISSUED_AT + after).isoformat(), "channel": channel}


def accepted(serial: str = "3", *, after: timedelta = timedelta(hours=6)) -> dict[str, Any]:
    return {**KEY, "serial_number": serial, "accepted_at": (ISSUED_AT + after).isoformat()}


def status(serial: str = "3", value: str = "FEES_RESTORED", *, after: timedelta = timedelta(days=2)) -> dict[str, Any]:
    return {**KEY, "serial_number": serial, "status": value, "changed_at": (ISSUED_AT + after).isoformat()}


def musaned(event_type: str, data: dict[str, Any], *, event_id: str | None = None) -> bytes:
    return cloudevent(event_type, data, event_id=event_id, source="nic" if event_type == "visa.status_changed"
                      else "musaned", time=ISSUED_AT)


class Topics:
    """The two partner topics the visas service reads, each with its own offsets."""

    def __init__(self) -> None:
        self.visas = Messages("visas")
        self.cancellations = Messages("cancellations")

    def __call__(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None) -> RawMessage:
        topic = self.cancellations if event_type.startswith("visa.cancellation") else self.visas
        return topic(musaned(event_type, data, event_id=event_id), SPONSOR.encode())


@pytest.fixture
def app(db_settings):
    application = VisasApplication(db_settings)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def registry(db_settings) -> SchemaRegistry:
    return SchemaRegistry(resolve_schemas_dir(db_settings))


@pytest.fixture
def ingress(app, registry):
    return Ingress(app=app, service="visas", registry=registry, handlers=handlers(app), rejectable=(VisasError,))


def stored(app, serial: str = "3") -> list[Any]:
    return list(app.events.get(Visa.create_id(SPONSOR, KEY["export_number"], serial)))


def kinds(app, serial: str = "3") -> list[str]:
    return [type(e).__name__ for e in stored(app, serial)]


def stored_rejections(app) -> list[Rejection.Recorded]:
    return [e for e in (app.mapper.to_domain_event(n) for n in app.notifications_after(0, 1000))
            if isinstance(e, Rejection.Recorded)]


def published(app, registry) -> list[Envelope]:
    """Every CloudEvent the outbox relay would publish, parsed and validated as a consumer would."""
    records, _, _ = OutboxRelay(app, "visas", translate, None, None)._next(0)  # type: ignore[arg-type]
    return [parse(RawMessage(r.topic, 0, n, r.key, r.value), registry, registry.types)
            for n, r in enumerate(records)]


def test_issue_request_and_acceptance_on_two_topics_start_an_automatic_refund(app, ingress):
    send = Topics()
    outcome = ingress.apply([send("visa.issued", issued()), send("visa.cancellation_requested", requested()),
                             send("visa.cancellation_accepted", accepted())])
    assert outcome.applied == 3 and not outcome.rejected
    assert kinds(app) == ["Opened", "Issued", "CancellationRequested", "CancellationRouted", "CancellationAccepted",
                          "RefundStarted"]
    started = stored(app)[-1]
    assert (started.route, started.fee, started.payment_id, started.rules_version) == (
        "AUTOMATIC", 200000, "SADAD-VISA-3", app.rules.version)
    view = app.visa(**KEY)
    assert view is not None
    assert (view["route"], view["outcome"], view["cancellation_channel"], view["hours_since_issue"]) == (
        "AUTOMATIC", "REFUND_STARTED", "MUSANED", 5.0)


def test_a_cancellation_before_its_visa_is_kept_and_routed_to_mofa_when_the_visa_arrives(app, ingress):
    send = Topics()
    early = ingress.apply([send("visa.cancellation_requested", requested(after=timedelta(hours=72))),
                           send("visa.cancellation_accepted", accepted(after=timedelta(hours=73)))])
    assert early.applied == 2 and not early.rejected
    assert app.visa(**KEY)["waiting_for"] == ["visa.issued"]
    ingress.apply([send("visa.issued", issued())])
    assert kinds(app)[-3:] == ["Issued", "CancellationRouted", "RefundStarted"]
    assert (stored(app)[-1].route, app.visa(**KEY)["waiting_for"]) == ("MOFA", [])


def test_an_acceptance_before_the_request_waits_for_it(app, ingress):
    send = Topics()
    ingress.apply([send("visa.issued", issued()), send("visa.cancellation_accepted", accepted())])
    assert kinds(app)[-1] == "CancellationAccepted"
    ingress.apply([send("visa.cancellation_requested", requested())])
    assert kinds(app)[-3:] == ["CancellationRequested", "CancellationRouted", "RefundStarted"]


def test_a_visit_visa_closes_as_non_refundable_on_acceptance(app, ingress):
    send = Topics()
    ingress.apply([send("visa.issued", issued(visa_type="VISIT", fee=30000)),
                   send("visa.cancellation_requested", requested()), send("visa.cancellation_accepted", accepted())])
    assert kinds(app)[-1] == "ClosedNonRefundable"
    assert app.visa(**KEY)["outcome"] == "CLOSED_NON_REFUNDABLE"


def test_a_redelivered_record_is_skipped_by_its_kafka_position(app, ingress):
    send = Topics()
    record = send("visa.issued", issued())
    ingress.apply([record])
    ingress.forget_cached_state()  # as after a restart: positions come from the database
    outcome = ingress.apply([record])
    assert (outcome.skipped_offsets, outcome.applied) == (1, 0)
    assert kinds(app) == ["Opened", "Issued"]


def test_the_same_cloudevent_id_at_a_new_offset_counts_once(app, ingress):
    send = Topics()
    first = ingress.apply([send("visa.issued", issued(), event_id="musaned-0001")])
    again = ingress.apply([send("visa.issued", issued(), event_id="musaned-0001"),
                           send("visa.issued", issued(), event_id="musaned-0001")])
    assert first.applied == 1
    assert (again.applied, again.duplicates) == (0, 2)
    assert kinds(app) == ["Opened", "Issued"]


def test_the_same_facts_under_a_new_cloudevent_id_change_nothing(app, ingress):
    send = Topics()
    ingress.apply([send("visa.issued", issued()), send("visa.cancellation_requested", requested())])
    outcome = ingress.apply([send("visa.issued", issued()), send("visa.cancellation_requested", requested())])
    assert outcome.applied == 2 and not outcome.rejected
    assert kinds(app) == ["Opened", "Issued", "CancellationRequested", "CancellationRouted"]


def test_rejects_a_reused_cloudevent_id_with_different_content(app, ingress):
    send = Topics()
    ingress.apply([send("visa.issued", issued(fee=200000), event_id="e-1")])
    outcome = ingress.apply([send("visa.issued", issued(fee=999), event_id="e-1")])
    assert outcome.rejected == {"duplicate_id_conflict": 1}
    assert app.visa(**KEY)["fee"] == 200000


def test_conflicting_facts_are_rejected_with_precise_reason_codes_and_change_nothing(app, ingress):
    send = Topics()
    ingress.apply([send("visa.issued", issued()), send("visa.cancellation_requested", requested()),
                   send("visa.cancellation_accepted", accepted())])
    before = kinds(app)
    outcome = ingress.apply([
        send("visa.issued", issued(fee=250000)),
        send("visa.cancellation_requested", requested(channel="ABSHER")),
        send("visa.cancellation_accepted", accepted(after=timedelta(days=3))),
    ])
    assert outcome.rejected == {"visa_issue_conflict": 1, "cancellation_request_conflict": 1,
                                "cancellation_acceptance_conflict": 1}
    assert kinds(app) == before
    reissue = next(r for r in stored_rejections(app) if r.reason_code == "visa_issue_conflict")
    assert "fee" in reissue.reason and reissue.topic == "visas" and reissue.rejected_by == "visas"
    assert json.loads(reissue.original["value"])["data"]["fee"] == 250000


def test_bad_input_is_rejected_with_a_reason_and_the_rest_of_the_batch_applies(app, ingress):
    send = Topics()
    outcome = ingress.apply([
        send("visa.issued", {**issued("1"), "fee": 0}),
        send("visa.issued", {**issued("2"), "visa_type": "DIPLOMATIC"}),
        send("visa.cancellation_requested", {**requested("3"), "requested_at": "2026-11-01T10:00:00"}),
        send.visas(musaned("visa.cancellation_requested", requested("4"))),   # on the wrong topic
        send.cancellations(musaned("visa.issued", issued("5"))),              # on the wrong topic
        send("visa.issued", issued("6")),
    ])
    assert outcome.rejected == {"schema_violation": 3, "wrong_topic": 2}
    assert outcome.applied == 1
    assert kinds(app, "6") == ["Opened", "Issued"]
    assert app.visa(SPONSOR, KEY["export_number"], "1") is None
    reasons = {r.original["offset"]: r.reason for r in stored_rejections(app) if r.topic == "visas"}
    assert "fee" in reasons[0] and "visa_type" in reasons[1]


def test_a_fees_restored_status_is_recorded_once_and_linked_to_the_payment(app, ingress):
    send = Topics()
    ingress.apply([send("visa.issued", issued()), send("visa.status_changed", status()),
                   send("visa.status_changed", status())])
    changed = stored(app)[-1]
    assert kinds(app) == ["Opened", "Issued", "StatusChanged"]
    assert (changed.status, changed.payment_id) == ("FEES_RESTORED", "SADAD-VISA-3")
    assert app.visa(**KEY)["status"] == "FEES_RESTORED"


def test_visas_are_rebuilt_from_the_event_store(app, ingress, db_settings):
    send = Topics()
    ingress.apply([send("visa.cancellation_requested", requested(after=timedelta(hours=71, minutes=59, seconds=59))),
                   send("visa.issued", issued())])
    fresh = VisasApplication(db_settings)  # no cache: the aggregate is replayed from stored events
    try:
        view = fresh.visa(**KEY)
    finally:
        fresh.close()
    assert view is not None
    assert (view["route"], view["hours_since_issue"], view["issued_at"]) == ("AUTOMATIC", 71.99, ISSUED_AT)


def test_every_envelope_the_visas_service_publishes_validates_against_the_schemas(app, ingress, registry):
    send = Topics()
    ingress.apply([
        send("visa.cancellation_accepted", accepted("1")),                     # before its request and issue
        send("visa.cancellation_requested", requested("1", after=timedelta(hours=80))),
        send("visa.issued", issued("1")),                                      # MOFA, refund started
        send("visa.issued", issued("2", visa_type="VISIT", fee=30000)),
        send("visa.cancellation_requested", requested("2")),
        send("visa.cancellation_accepted", accepted("2")),                     # closed non-refundable
        send("visa.issued", issued("3", visa_type="BUSINESS", at=datetime(2021, 5, 1, tzinfo=timezone.utc))),
        send("visa.cancellation_requested", requested("3")),                   # manual review, never accepted
        send("visa.status_changed", status("1")),
        send("visa.status_changed", status("9", "CANCELLED")),                 # a status before its visa
        send("visa.issued", issued("1", fee=1)),                               # rejected: conflict
    ])
    envelopes = published(app, registry)
    by_type: dict[str, list[Envelope]] = {}
    for envelope in envelopes:
        by_type.setdefault(envelope.type, []).append(envelope)
    assert set(by_type) == {
        "ledger.visa.issued", "ledger.visa.cancellation_requested", "ledger.visa.cancellation_accepted",
        "ledger.visa.cancellation_routed", "ledger.visa.refund_started", "ledger.visa.closed_non_refundable",
        "ledger.visa.status_changed", "event.rejected"}
    for envelope in envelopes:
        assert envelope.raw.topic == ("rejections" if envelope.type == "event.rejected" else "ledger.visas")
        if envelope.type != "event.rejected":
            assert envelope.raw.key == SPONSOR.encode()
            assert envelope.subject == f"visa/{SPONSOR}/1448001238/{envelope.data['serial_number']}"
            assert {"sponsor_id", "export_number", "serial_number", "origin"} <= set(envelope.data)

    [started] = by_type["ledger.visa.refund_started"]
    assert {k: started.data[k] for k in ("serial_number", "payment_id", "amount", "route", "rules_version",
                                         "channel")} == {
        "serial_number": "1", "payment_id": "SADAD-VISA-1", "amount": 200000, "route": "MOFA",
        "rules_version": app.rules.version, "channel": "MUSANED"}
    assert {"requested_at", "accepted_at", "issued_at"} <= set(started.data)
    assert started.time == ISSUED_AT + timedelta(hours=6)           # the refund starts at acceptance
    early_acceptance = by_type["ledger.visa.cancellation_accepted"][0]
    assert early_acceptance.data["waiting_for"] == ["visa.issued", "visa.cancellation_requested"]
    routes = {e.data["serial_number"]: (e.data["route"], e.data["rule"])
              for e in by_type["ledger.visa.cancellation_routed"]}
    assert routes == {"1": ("MOFA", "after_window"), "2": ("NON_REFUNDABLE", "non_refundable_type"),
                      "3": ("MANUAL_REVIEW", "unknown_visa_type")}
    [closed] = by_type["ledger.visa.closed_non_refundable"]
    assert (closed.data["serial_number"], closed.data["reason"]) == ("2", "VISIT visas are non-refundable")
    [rejected] = by_type["event.rejected"]
    assert rejected.data["reason_code"] == "visa_issue_conflict"
