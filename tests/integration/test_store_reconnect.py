"""A service's event store outlives a PostgreSQL restart without pinging the server at every
connection checkout (POSTGRES_PRE_PING off): a pooled connection the restart broke fails its
first use, the pool discards it, and the library's retry takes a fresh one."""

import pytest

from services.kit.embedded import EmbeddedPostgres, free_port
from services.kit.settings import Settings
from services.payments.application import PaymentsApplication
from services.payments.domain import Payment

pytestmark = pytest.mark.integration


def test_the_event_store_reads_and_writes_after_postgres_restarts(tmp_path) -> None:
    port = free_port()
    server = EmbeddedPostgres(data_dir=tmp_path, port=port).start()
    app = None
    try:
        settings = Settings.from_env({"DATABASE_URL": server.url})
        assert settings.postgres_env("payments")["POSTGRES_PRE_PING"] == "n"
        app = PaymentsApplication(settings)
        assert app.find(Payment.create_id("PAY-BEFORE")) is None
        app.ingress_recorder.set_outbox_position("ledger", 7)   # the pool holds open connections now

        server.stop()                                            # every pooled connection is broken
        server = EmbeddedPostgres(data_dir=tmp_path, port=port).start()

        assert app.find(Payment.create_id("PAY-AFTER")) is None
        app.ingress_recorder.set_outbox_position("ledger", 9)
        assert app.ingress_recorder.outbox_position("ledger") == 9
    finally:
        if app is not None:
            app.close()
        server.stop()
