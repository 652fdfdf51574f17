"""The audit API as it runs: every router, access audit and request metrics, composed in one
place (the service and the tests build exactly this)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import asyncpg
from fastapi import FastAPI

from services.audit.access import add_access_audit, create_access_router
from services.audit.api import create_api
from services.audit.refunds_api import Decide, create_refunds_router
from services.audit.search_api import create_search_router
from services.audit.stats_api import create_stats_router
from services.audit.visas_api import create_visas_router
from services.kit import liaisons
from services.kit.pii import CLEAR, FieldCipher
from services.kit.rules import Rules
from services.kit.web import add_request_metrics


def build_api(pool_of: Callable[[], asyncpg.Pool | None], secret: str, rules: Rules, decide: Decide | None,
              health_routes: Callable[[FastAPI], None],
              clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
              liaisons_file: str = "", fields: FieldCipher = CLEAR) -> FastAPI:
    """``fields``: the read model's FieldCipher (``CIPHER_KEY``): opens sealed IBANs, hashes IBAN searches."""
    registry = liaisons.registry(liaisons_file)
    api = create_api(pool_of, secret, health_routes, routers=[
        lambda pool: create_refunds_router(pool, secret, rules, decide, clock, registry, fields),
        lambda pool: create_visas_router(pool, secret, rules, clock, registry, fields),
        lambda pool: create_access_router(pool, secret, fields),
        lambda pool: create_search_router(pool, secret, fields),
        lambda pool: create_stats_router(pool, secret, clock),
    ], fields=fields)
    add_access_audit(api, pool_of, secret, fields)
    add_request_metrics(api)
    return api
