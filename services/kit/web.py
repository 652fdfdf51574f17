"""HTTP for every service: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (ready).

Each service serves a FastAPI app from inside its Faust worker; the audit
service adds its API to the same app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.kit import metrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


class Health:
    """Readiness checks of one process: each raises (or times out) when not ready."""

    def __init__(self, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._checks: dict[str, Check] = {}
        self._flags: dict[str, str] = {}
        self._fatal: set[str] = set()  # conditions that also fail /healthz (the orchestrator restarts us)

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def set_problem(self, name: str, problem: str | None, *, fatal: bool = False) -> None:
        """Mark (or clear, with None) a condition that makes the process not ready; ``fatal``: not
        alive either (a stalled consumer, which only a restart cures)."""
        if problem is None:
            self._flags.pop(name, None)
        else:
            self._flags[name] = problem
        (self._fatal.add if fatal else self._fatal.discard)(name)

    @property
    def liveness_problem(self) -> str | None:
        """The first fatal condition set, if any: /healthz answers 503 with it."""
        return next((self._flags[name] for name in self._fatal if name in self._flags), None)

    async def report(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                await asyncio.wait_for(check(), self.timeout)
            except Exception as error:  # any failure of a check means "not ready"; the reason is reported
                results[name] = f"down: {type(error).__name__}: {error}"[:300]
                metrics.DEPENDENCY_UP.labels(name).set(0)
            else:
                results[name] = "ok"
                metrics.DEPENDENCY_UP.labels(name).set(1)
        results.update(self._flags)
        return all(v == "ok" for v in results.values()), results


def add_operational_routes(api: FastAPI, health: Health) -> None:
    """Mount /metrics, /healthz and /readyz on ``api``."""

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        if health.liveness_problem:
            return JSONResponse({"status": "stalled", "problem": health.liveness_problem}, status_code=503)
        return JSONResponse({"status": "alive"})

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready, checks = await health.report()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def add_request_metrics(api: FastAPI) -> None:
    """Count and time every request by its route template (never by raw path)."""
    api.add_middleware(RequestMetrics)


class RequestMetrics:
    """Plain ASGI middleware: a request is counted once its answer has left (a stream: its last chunk), with
    the status it was answered with; a request that failed before answering counts as 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def measured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, measured)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")  # the router puts the route in scope
            metrics.HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            metrics.HTTP_LATENCY.labels(template, scope["method"]).observe(time.perf_counter() - started)


def operational_app(service: str, health: Health) -> FastAPI:
    api = FastAPI(title=f"refund-ledger {service}", docs_url=None, redoc_url=None, openapi_url=None)
    add_operational_routes(api, health)
    return api
