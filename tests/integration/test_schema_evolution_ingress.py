"""payment.recorded v1 and v2 side by side through the payments service's real ingress and store."""

from __future__ import annotations

import pytest

from services.kit.envelope import SchemaRegistry, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.rejections import Rejection
from services.payments.application import PaymentsApplication, handlers, timer_handlers
from services.payments.domain import PaymentsError
from tests.factories import Messages, cloudevent, payment
from tests.unit.test_schema_evolution import V2, as_v2, value

pytestmark = pytest.mark.integration


def test_the_payments_service_applies_v1_and_v2_payments_and_records_the_version_it_refused(db_settings):
    app = PaymentsApplication(db_settings)
    try:
        ingress = Ingress(app=app, service="payments", registry=SchemaRegistry(resolve_schemas_dir(db_settings)),
                          handlers=handlers(app), rejectable=(PaymentsError,), timer_handlers=timer_handlers(app))
        msg = Messages()
        outcome = ingress.apply([
            msg(cloudevent("payment.recorded", payment("PAY-V1", amount=30000))),
            msg(value(as_v2(payment("PAY-V2", amount=20000), terminal_id="ATM-80-0412"), V2, "evt-v2")),
            msg(value(payment("PAY-BAD", amount=100), V2, "evt-bad")),  # v1 names under the v2 schema
            msg(value(as_v2(payment("PAY-V1", amount=99999)), V2, "evt-other-facts"))])  # a business rule
        assert outcome.applied == 2 and sum(outcome.rejected.values()) == 2
        assert outcome.rejected["schema_violation"] == 1
        assert app.balance("1012345672", "JAWAZAT", "PASSPORT_ISSUE")["credited"] == 50000
        rejections = {e.event_id: e for e in (app.mapper.to_domain_event(n) for n in app.notifications_after(0, 100))
                      if isinstance(e, Rejection.Recorded)}
        assert rejections[None].event_dataschema is None  # refused by the schema, before an envelope existed
        assert rejections["evt-other-facts"].event_dataschema == V2  # the rule refused a v2 event
        ingress.forget_cached_state()
        assert app.repository.get(rejections["evt-other-facts"].originator_id).event_dataschema == V2
    finally:
        app.close()
