"""A service app with one slow sign-up route, built by the real factory (shared/app.py)
and served by the real command (shared/serve.py), for tests/integration/test_overload.py.

It needs no database and no broker: the factory's lifespan (which opens them) is
replaced by one that opens nothing; the middleware stack, the problem handlers and
the probes are the factory's own. Run: ``serve("tests.integration.overload_app:create_app",
ServiceSettings())`` with ``SLOW_S`` in the environment.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from shared.app import Runtime, create_service_app
from shared.settings import ServiceSettings


class Inside:
    now = 0
    most = 0


def create_app() -> FastAPI:
    slow_s = float(os.environ.get("SLOW_S", "0.25"))
    router = APIRouter()

    @router.post("/cohorts/{cohort_id}/registrations", status_code=202)
    async def sign_up(cohort_id: str, body: dict[str, Any]) -> dict[str, str]:
        Inside.now += 1
        Inside.most = max(Inside.most, Inside.now)
        try:
            await asyncio.sleep(slow_s)  # the database's time, say
        finally:
            Inside.now -= 1
        return {"status": "submitted", "cohort_id": cohort_id}

    @router.get("/most-at-once")
    async def most_at_once() -> dict[str, int]:
        return {"most": Inside.most}

    async def setup(_runtime: Runtime) -> None:
        pass

    app = create_service_app(
        ServiceSettings(),
        title="overload",
        description="a slow sign-up behind the factory's middleware",
        routers=[router],
        setup=setup,
    )

    @asynccontextmanager
    async def no_infrastructure(_app: FastAPI) -> AsyncIterator[None]:
        yield

    app.router.lifespan_context = no_infrastructure
    return app
