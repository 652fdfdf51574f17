"""The audit API exactly as the service composes it (``services.audit.app.build_api``),
served by uvicorn on 127.0.0.1 over an asyncpg pool, without the Faust worker around it:
``python -m bench.api_server DATABASE_URL PORT SECRET``."""

from __future__ import annotations

import asyncio
import sys


async def serve(database_url: str, port: int, secret: str) -> None:
    import asyncpg
    import uvicorn
    from services.audit.app import build_api
    from services.audit.projections import create_schema
    from services.kit.rules import load_rules

    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=10, command_timeout=30)
    await create_schema(pool)

    def health(api) -> None:
        @api.get("/readyz", include_in_schema=False)
        async def ready() -> dict[str, str]:
            return {"status": "ready"}

    api = build_api(lambda: pool, secret, load_rules(), None, health)
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    try:
        await server.serve()
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
