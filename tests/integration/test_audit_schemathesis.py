"""schemathesis against the audit API's own ``/openapi.json``: for every operation, generated requests
(bounded examples) never get a 5xx, and every answer matches what the document declares: its status
code, content type and body schema.

The API is served by uvicorn on 127.0.0.1 (its own thread and event loop, where its asyncpg pool
lives) over a real PostgreSQL read model loaded from ledger events.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import asyncpg
import pytest
import uvicorn

from services.audit.projections import create_schema
from tests.conftest import TEST_SECRET, fresh_database
from tests.integration.test_audit_api import Decisions, Ledger, compose_api, riyadh

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[test]' installs schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 - schemathesis brings hypothesis
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.kit.auth import issue_token  # noqa: E402
from services.kit.embedded import free_port  # noqa: E402

pytestmark = pytest.mark.integration

# positive_data_acceptance is left out: a cursor is opaque (any string fits its schema; only ones the API issued
# are accepted, 422 otherwise), so a schema-valid random cursor is rightly refused.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15  # per operation: bounded, the suite's time budget


async def seed(pool: asyncpg.Pool) -> None:
    ledger = Ledger(pool)
    ledger.payment("PAY-1", riyadh(1, 9, 30))
    ledger.unreflected("PAY-1")
    ledger.refund_requested("RR-1", riyadh(2, 10))
    ledger.ordered("RR-1", riyadh(2, 10, 0, 1))
    ledger.completed("RR-1", riyadh(3, 10))
    ledger.refund_requested("AB-1", riyadh(3, 11), route="JAWAZAT", amount=900000)
    ledger.visa_routed("3", "AUTOMATIC", riyadh(2, 8), riyadh(3, 9))
    ledger.visa_refund("3", "AUTOMATIC", riyadh(3, 9), riyadh(3, 10), payment_id="SV-3")
    ledger.visa_status("4", "FEES_RESTORED", riyadh(3, 14, 20))
    ledger.status_mismatch("4", riyadh(3, 14, 20), riyadh(19, 0, 0, 3))
    await ledger.project()


class Served:
    """The audit API under uvicorn in a thread of its own (schemathesis calls it synchronously)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.started = threading.Event()
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="audit-api", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # surfaced to the test by start()
            self.error = error
            self.started.set()

    async def _serve(self) -> None:
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=4)
        try:
            await create_schema(pool)
            await seed(pool)
            api = compose_api(lambda: pool, Decisions())
            self.server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=self.port, log_level="warning",
                                                        lifespan="off", access_log=False))
            serving = asyncio.create_task(self.server.serve())
            while not self.server.started and not serving.done():
                await asyncio.sleep(0.05)
            self.started.set()
            await serving
        finally:
            await pool.close()

    def start(self) -> str:
        self.thread.start()
        assert self.started.wait(60), "the audit API did not start"
        if self.error is not None:
            raise self.error
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def served(postgres) -> Iterator[str]:
    server = Served(fresh_database(postgres))
    try:
        yield server.start()
    finally:
        server.stop()


def operations(base: str) -> list:
    """Every /api/v1 operation of the served OpenAPI document."""
    loaded = schemathesis.openapi.from_url(f"{base}/openapi.json").include(path_regex="^/api/v1/")
    return [result.ok() for result in loaded.get_all_operations()]


def check(operation, base: str) -> None:
    """Generated requests for one operation, each answer checked against the document."""
    role = "jawazat" if operation.method.upper() == "POST" else "admin"
    headers = {"Authorization": f"Bearer {issue_token(TEST_SECRET, role, f'{role}:schemathesis', 900)}"}

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def keeps_contract(case):
        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS)

    keeps_contract()


def test_the_audit_api_keeps_its_own_openapi_contract(served):
    """No 5xx; every status, content type and body as declared, for every operation. Reads as admin (who may
    read every list, the access log too); decisions as a jawazat employee (the Jawazat queue's decider)."""
    checked = []
    for operation in operations(served):
        check(operation, served)
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 20 and "GET /api/v1/refunds.csv" in checked, checked
