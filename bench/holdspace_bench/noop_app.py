"""A FastAPI app whose endpoint does nothing: the HTTP ceiling of this machine.

Served as the services are (shared/serve.py, the same uvicorn options), with the
run command's environment (``raw.noop_command``).
"""

from __future__ import annotations

from fastapi import FastAPI

from shared.serve import serve
from shared.settings import ServiceSettings


def create_app() -> FastAPI:
    app = FastAPI(title="noop")

    @app.post("/noop")
    async def noop() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    return app


if __name__ == "__main__":
    # Only the address is read (HTTP_HOST, HTTP_PORT): it holds no secret of any kind.
    serve("holdspace_bench.noop_app:create_app", ServiceSettings(holdspace_env="development"))
