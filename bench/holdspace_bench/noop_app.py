"""A FastAPI app whose endpoint does nothing: the HTTP ceiling of this machine.

Run under uvicorn with the services' own command line (``raw.noop_command``).
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI(title="noop")

    @app.post("/noop")
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    return app
