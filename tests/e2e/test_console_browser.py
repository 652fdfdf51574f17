"""The audit console in a real browser: Playwright driving Debian's Chromium headless (installed by
``make browser``, never ``playwright install``), against the audit API served by uvicorn on
127.0.0.1 with a real PostgreSQL read model.

The read model is loaded from ledger events, as the integration tests load it: a visa refund
through the audit projection, and an Absher refund above the four-eyes amount opened by the real
refunds application (its event store on the same PostgreSQL). A Jawazat decision made in the
browser goes through the API's ``decide`` into that refunds application's ingress, and the events
it publishes are projected back, as Kafka would carry them (the pattern of
tests/integration/test_refund_saga.py). Screenshots of the case page in Arabic and in English are
saved under ``test-artifacts/console/`` (or ``$TEST_ARTIFACTS_DIR/console/``) for review.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import uvicorn

from services.audit.app import build_api
from services.audit.projections import Projection, create_schema
from services.kit.auth import issue_token
from services.kit.embedded import free_port
from services.kit.envelope import RawMessage, SchemaRegistry, resolve_schemas_dir
from services.kit.ingress import Ingress
from services.kit.outbox import OutboxRelay
from services.kit.rules import load_rules
from services.kit.web import Health, add_operational_routes
from services.refunds import application as refunds
from services.refunds import service as refunds_service
from services.refunds.domain import RefundsError
from tests.conftest import TEST_SECRET, fresh_database, make_settings
from tests.factories import PAID_AT, cloudevent, refund_request
from tests.integration.test_audit_api import EXPORT, SPONSOR, Ledger, origin, riyadh, visa, visa_subject

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install -e '.[test]' installs playwright")

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts")) / "console"
RULES = load_rules()
MAKER, CHECKER = "jawazat:e.alharbi", "jawazat:n.alqahtani"
ABSHER_REFUND = "AB-2026-4E"
VISA_REFUND_SERIAL = "1"
SADAD_BILL = "7700120026110300"
CANCEL_REQUESTED, CANCEL_ACCEPTED, REFUNDED = riyadh(4, 9, 15), riyadh(4, 10, 30), riyadh(5, 11, 45)
#: The browser's clock while the agent works: the day after the seeded refund completed. The console
#: draws its charts over windows ending "now" (the last 30 days by default), and the seeded cases have
#: fixed dates; the real date would move them out of the window as the calendar turns.
VIEWED_AT = REFUNDED + timedelta(days=1)


class RefundsSide:
    """The real refunds application on PostgreSQL; what it publishes is projected into the audit read model."""

    def __init__(self, settings, projection: Projection) -> None:
        registry = SchemaRegistry(resolve_schemas_dir(settings))
        self.app = refunds.RefundsApplication(settings)
        self.ingress = Ingress(self.app, "refunds", registry, refunds.handlers(self.app), (RefundsError,),
                               timer_handlers=refunds.timer_handlers(self.app))
        self.relay = OutboxRelay(self.app, "refunds", refunds_service.translate, None, None)
        self.projection = projection
        self.position = 0
        self.offsets: dict[str, int] = {}
        self.rejections: list[dict] = []

    def _feed(self, topic: str, value: bytes) -> list:
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        self.ingress.apply([RawMessage(topic, 0, offset, SPONSOR.encode(), value)])
        records, self.position, _ = self.relay._next(self.position)
        return records

    async def feed(self, topic: str, value: bytes) -> None:
        records = await asyncio.to_thread(self._feed, topic, value)  # the event store is synchronous
        self.rejections += [json.loads(r.value) for r in records if r.topic == "rejections"]
        messages = [RawMessage(r.topic, 0, self.offsets[topic] * 100 + i, r.key, r.value)
                    for i, r in enumerate(records) if r.topic.startswith("ledger.")]
        await self.projection.apply(messages)

    async def decide(self, event_type: str, data: dict) -> str:
        """The audit API's decision channel: the command reaches the refunds service's ingress."""
        event_id = f"decision-{len(self.offsets)}-{self.offsets.get('refund-decisions', -1) + 1}"
        source = "jawazat" if data["queue"] == "JAWAZAT_QUEUE" else "mofa"
        await self.feed("refund-decisions", cloudevent(event_type, data, event_id=event_id, source=source))
        return event_id


async def seed_visa_refund(pool: asyncpg.Pool) -> None:
    """A domestic worker visa cancelled in Musaned within 72 hours, refunded automatically."""
    ledger = Ledger(pool)
    serial = VISA_REFUND_SERIAL
    ledger.payment(f"SV-{serial}", riyadh(3, 7, 40), beneficiary=SPONSOR, agency="MUSANED", service_code="VISA_FEE",
                   amount=200000, bill=SADAD_BILL)
    ledger.acknowledged(f"SV-{serial}", riyadh(3, 7, 41))
    ledger.visa_routed(serial, "AUTOMATIC", riyadh(3, 8), CANCEL_REQUESTED)
    ledger.emit("ledger.visas", "ledger.visa.cancellation_accepted", CANCEL_ACCEPTED, {
        **visa(serial), "accepted_at": CANCEL_ACCEPTED.isoformat(), "origin": origin("musaned",
                                                                                   "visa.cancellation_accepted")},
        SPONSOR, visa_subject(serial))
    refund_id = ledger.visa_refund(serial, "AUTOMATIC", CANCEL_REQUESTED, CANCEL_ACCEPTED, payment_id=f"SV-{serial}")
    ledger.completed(refund_id, REFUNDED)
    await ledger.project()


@pytest.fixture
async def console(postgres):
    """The audit API under uvicorn on 127.0.0.1, its read model, and the refunds application behind it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (make test depends on it)")
    database_url = fresh_database(postgres)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    side = None
    server = None
    serving = None
    try:
        await create_schema(pool)
        await seed_visa_refund(pool)
        side = await asyncio.to_thread(RefundsSide, make_settings(database_url), Projection(pool))
        above = RULES.four_eyes_above + 250000
        await side.feed("refund-requests", cloudevent("refund.requested", refund_request(
            ABSHER_REFUND, beneficiary_id=SPONSOR, amount=above, channel="ABSHER",
            at=PAID_AT + timedelta(days=1)), source="absher"))
        api = build_api(lambda: pool, TEST_SECRET, RULES, side.decide,
                        lambda app: add_operational_routes(app, Health()))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off", access_log=False))
        serving = asyncio.create_task(server.serve())
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}", pool, side
    finally:
        if server is not None:
            server.should_exit = True
        if serving is not None:
            await asyncio.wait_for(serving, 10)
        if side is not None:
            await asyncio.to_thread(side.app.close)
        await pool.close()


async def sign_in(page, base: str, role: str, subject: str) -> None:
    await page.goto(f"{base}/console/")
    await page.locator("#token").fill(issue_token(TEST_SECRET, role, subject, 900))
    await page.locator("#signin-form button[type=submit]").click()
    await page.locator("#app").wait_for(state="visible")


async def sign_out(page) -> None:
    await page.locator("#signout").click()
    await page.locator("#signin").wait_for(state="visible")


async def approve_in_queue(page, refund_id: str) -> None:
    await page.locator('[data-nav="jawazat"]').click()
    row = page.locator("#list-body tr", has_text=refund_id)
    await row.locator("button.approve").click()
    await page.locator("#decision-confirm").click()
    await row.locator(".badge.done").wait_for()


async def test_an_agent_finds_a_visa_case_reads_it_in_both_languages_and_jawazat_approve_with_four_eyes(console):
    base, pool, side = console
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1600}, locale="ar-SA")
            await page.clock.set_fixed_time(VIEWED_AT)
            await sign_in(page, base, "auditor", "mof:a.alghamdi")
            assert await page.evaluate("[document.documentElement.lang, document.documentElement.dir]") == ["ar", "rtl"]

            # the sponsor's ID alone: every case of theirs, exported as CSV from the results
            await page.locator("#search-input").fill(SPONSOR)
            await page.locator("#search-form button[type=submit]").click()
            await page.locator("#search-results .result").first.wait_for()
            async with page.expect_download() as downloading:
                await page.locator("#search-results button.csv").click()
            exported = await (await downloading.value).path()
            lines = Path(exported).read_text(encoding="utf-8").splitlines()
            assert lines[0] == "kind,key,label,url" and len(lines) == 1 + await page.locator(
                "#search-results .result").count()

            # the agent types what the sponsor reads out: sponsor ID, export number, serial number
            await page.locator("#search-input").fill(f"{SPONSOR} {EXPORT} {VISA_REFUND_SERIAL}")
            await page.locator("#search-form button[type=submit]").click()
            title = page.locator("#case-title")
            await title.wait_for()  # one match: the case opens by itself
            assert f"{SPONSOR} / {EXPORT} / {VISA_REFUND_SERIAL}" in await title.inner_text()
            body = page.locator("#case-body")
            for moment in (CANCEL_REQUESTED, CANCEL_ACCEPTED, REFUNDED):
                shown = body.locator(f'time[datetime="{moment.isoformat()}"]').first
                await shown.wait_for()
                assert await shown.inner_text() == moment.strftime("%Y-%m-%d %H:%M:%S")
            assert SADAD_BILL in await body.inner_text(), "the payment's SADAD bill number"
            channel = body.locator('[title="MUSANED"]').first
            assert "مساند" in await channel.inner_text()
            await body.locator('.badge.state[title="COMPLETED"]').wait_for()  # the related refund loaded
            await page.screenshot(path=str(ARTIFACTS / "case-ar.png"), full_page=True)

            await page.locator("#lang").click()
            assert await page.evaluate("[document.documentElement.lang, document.documentElement.dir]") == ["en", "ltr"]
            assert "Musaned" in await channel.inner_text() or "Musaned" in await body.inner_text()
            assert "Cancellation" in await body.inner_text() or "cancellation" in await body.inner_text()
            await page.screenshot(path=str(ARTIFACTS / "case-en.png"), full_page=True)

            await page.locator('[data-nav="charts"]').click()
            await page.locator("#charts-body svg.chart rect.bar").first.wait_for()
            await page.screenshot(path=str(ARTIFACTS / "charts-en.png"), full_page=True)
            await sign_out(page)

            # four eyes: the maker's approval is recorded and the case stays in the queue ...
            await sign_in(page, base, "jawazat", MAKER)
            await approve_in_queue(page, ABSHER_REFUND)
            assert "First approval" in await page.locator("#list-body").inner_text()
            await page.locator('[data-nav="search"]').click()
            await page.locator('[data-nav="jawazat"]').click()
            row = page.locator("#list-body tr", has_text=ABSHER_REFUND)
            await row.locator(".four-eyes").wait_for()
            assert MAKER in await row.locator(".four-eyes").inner_text()
            assert await row.locator("button.approve").count() == 0, "the maker is never offered the check"
            await page.screenshot(path=str(ARTIFACTS / "jawazat-queue-en.png"), full_page=True)
            await page.locator("#search-input").fill(ABSHER_REFUND)  # the case page names whom to call
            await page.locator("#search-form button[type=submit]").click()
            liaison = page.locator("#case-body .liaison")
            await liaison.wait_for()
            assert "+966115550200" in await liaison.inner_text() and "Jawazat" in await liaison.inner_text()
            assert MAKER in await page.locator("#case-body").inner_text()
            await page.screenshot(path=str(ARTIFACTS / "absher-case-en.png"), full_page=True)
            await sign_out(page)

            # ... until a second, different jawazat employee approves: then the bank is ordered
            await sign_in(page, base, "jawazat", CHECKER)
            await approve_in_queue(page, ABSHER_REFUND)
            await page.locator('[data-nav="search"]').click()
            await page.locator('[data-nav="jawazat"]').click()
            await page.locator("#list-body .note", has_text="Nothing here").wait_for()  # ordered: out of the queue
        finally:
            await browser.close()

    async with pool.acquire() as conn:
        case = await conn.fetchrow("SELECT state, decided_by, first_approved_by FROM audit.refunds "
                                   "WHERE refund_id = $1", ABSHER_REFUND)
        subjects = await conn.fetch("SELECT DISTINCT subject FROM audit.access_log WHERE subject IS NOT NULL")
    assert dict(case) == {"state": "ORDERED", "decided_by": CHECKER, "first_approved_by": MAKER}
    assert side.rejections == [], "the maker never reached the ledger as checker"
    assert {r["subject"] for r in subjects} == {"mof:a.alghamdi", MAKER, CHECKER}, "every look is in the access log"
    async with pool.acquire() as conn:
        exported = await conn.fetchrow("SELECT subject, rows FROM audit.access_log WHERE path = '/api/v1/search.csv'")
    assert exported["subject"] == "mof:a.alghamdi" and exported["rows"] == len(lines) - 1
    for name in ("case-ar.png", "case-en.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
