"""Request metrics: counted by route template with the status actually sent, once the answer has left."""

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import REGISTRY

from services.kit.web import add_request_metrics

pytestmark = pytest.mark.asyncio


def counted(route: str, status: str) -> float:
    return REGISTRY.get_sample_value(
        "refund_ledger_http_requests_total", {"route": route, "method": "GET", "status": status}) or 0.0


def timed(route: str) -> float:
    return REGISTRY.get_sample_value(
        "refund_ledger_http_request_duration_seconds_count", {"route": route, "method": "GET"}) or 0.0


def app(sent: list[str]) -> FastAPI:
    api = FastAPI()
    add_request_metrics(api)

    @api.get("/t/cases/{case_id}")
    async def case(case_id: str) -> dict[str, str]:
        return {"case": case_id}

    @api.get("/t/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            for chunk in ("a,", "b,", "c"):
                sent.append(chunk)
                yield chunk
            # the request is still not counted while its stream is running
            sent.append(f"counted while streaming: {counted('/t/stream', '200')}")
        return StreamingResponse(chunks(), media_type="text/plain")

    @api.get("/t/broken")
    async def broken() -> None:
        raise RuntimeError("a route that fails before answering")

    return api


async def test_requests_are_counted_by_template_with_the_status_sent():
    sent: list[str] = []
    before = {key: counted(*key) for key in
              [("/t/cases/{case_id}", "200"), ("/t/stream", "200"), ("/t/broken", "500"), ("unmatched", "404")]}
    before_timed = timed("/t/cases/{case_id}")
    transport = httpx.ASGITransport(app=app(sent), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kit.test") as http:
        answers = [await http.get(path) for path in ("/t/cases/A-1", "/t/cases/A-2", "/t/stream", "/t/broken",
                                                     "/nowhere")]
    assert [a.status_code for a in answers] == [200, 200, 200, 500, 404]
    assert answers[2].text == "a,b,c"
    assert sent[-1] == f"counted while streaming: {before[('/t/stream', '200')]}", "a stream counts at its end"
    assert {key: counted(*key) - was for key, was in before.items()} == {
        ("/t/cases/{case_id}", "200"): 2, ("/t/stream", "200"): 1, ("/t/broken", "500"): 1, ("unmatched", "404"): 1}
    assert timed("/t/cases/{case_id}") - before_timed == 2
    assert counted("/t/cases/A-1", "200") == 0, "never by raw path"
