"""Structured logs: every line emitted while the ingress handles a message names
the message (topic, partition, offset, event id, case id); a rejection's line too."""

from __future__ import annotations

import json
import logging

import pytest

from services.kit import logs
from services.kit.envelope import SchemaRegistry, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.payments.application import PaymentsApplication, handlers, timer_handlers
from services.payments.domain import PaymentsError
from tests.factories import Messages, acknowledgement, cloudevent, payment

pytestmark = pytest.mark.integration


class Lines(logging.Handler):
    """Formats every record as the services do (JSON, one per line) when it is emitted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        assert "\n" not in text
        self.lines.append(json.loads(text))


@pytest.fixture
def captured():
    handler = Lines()
    loggers = [logging.getLogger(name) for name in ("services.kit.ingress", "services.test")]
    saved = [(logger.level, logger.disabled, logger.propagate) for logger in loggers]
    for logger in loggers:  # another test may have configured logging (disabling existing loggers)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.disabled, logger.propagate = False, False
    try:
        yield handler.lines
    finally:
        for logger, (level, disabled, propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.disabled, logger.propagate = disabled, propagate


def test_a_rejection_log_line_names_topic_partition_offset_event_id_and_case(db_settings, captured):
    app = PaymentsApplication(db_settings)
    try:
        ingress = Ingress(app=app, service="payments", registry=SchemaRegistry(resolve_schemas_dir(db_settings)),
                          handlers=handlers(app), rejectable=(PaymentsError,), timer_handlers=timer_handlers(app))
        msg = Messages(topic="payments", partition=3)
        unknown = cloudevent("payment.acknowledged", acknowledgement("PAY-NEVER"), event_id="ack-1")
        outcome = ingress.apply([msg(cloudevent("payment.recorded", payment("PAY-1"))), msg(unknown),
                                 msg(b"{not json")])
    finally:
        app.close()
    assert outcome.applied == 1 and outcome.rejected == {"unknown_payment": 1, "malformed_json": 1}
    rejected = [line for line in captured if line["message"].startswith("event rejected")]
    assert [(r["reason_code"], r["topic"], r["partition"], r["offset"]) for r in rejected] == [
        ("unknown_payment", "payments", 3, 1), ("malformed_json", "payments", 3, 2)]
    assert (rejected[0]["event_id"], rejected[0]["event_type"], rejected[0]["case_id"]) == (
        "ack-1", "payment.acknowledged", "PAY-NEVER")
    assert "event_id" not in rejected[1], "an unreadable message has no event id to name"
    assert "topic" not in logs.current(), "the context ends with the message"


def test_the_context_reaches_every_line_inside_it_and_extra_fields_win(captured):
    log = logging.getLogger("services.test")
    with logs.context(topic="visas", partition=0, offset=7, event_id="e-1", case_id=None):
        log.warning("inside", extra={"offset": 8})
    log.warning("outside")
    inside, outside = captured
    assert (inside["topic"], inside["partition"], inside["offset"], inside["event_id"]) == ("visas", 0, 8, "e-1")
    assert "case_id" not in inside and "topic" not in outside
    assert logs.case_id({"sponsor_id": "1", "export_number": "2", "serial_number": "3"}) == "1/2/3"
