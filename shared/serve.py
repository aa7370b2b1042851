"""A service's own command: ``python -m <service>`` serves it on the address its
settings name; ``python -m <service> reseal`` re-seals its data after a key rotation.

The interface and port come from HTTP_HOST and HTTP_PORT, never from a command line
that could disagree with the settings: a service binds 127.0.0.1 unless its
environment says otherwise on purpose (docker-compose.yml says 0.0.0.0 inside the
containers' own network).
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
from collections.abc import Mapping

import typer
import uvicorn
from pymongo import AsyncMongoClient

from shared.logs import configure_logging
from shared.reseal import Kept, Resealer, SealedIn, report
from shared.security import FieldCipher
from shared.settings import ServiceSettings

# What a service's lifespan may take to stop; the drains of the consumers and the relay
# fit in it, and compose's stop_grace_period leaves room above it.
GRACEFUL_SHUTDOWN_S = 10
# An idle connection is kept longer than the clients and proxies in front keep theirs
# (httpx 5 s, aiohttp 15 s, nginx and load balancers 60 s), so they close it first: a
# client never sends a request on a connection this side is closing (a reset).
KEEP_ALIVE_S = 65
# Connections the event loop has not accepted yet wait in the kernel (capped by
# net.core.somaxconn); past it, Linux drops the handshake's last ACK and the client sends
# it again (tcp_abort_on_overflow=0, the default): a delay, never a reset. uvicorn's default.
BACKLOG = 2048


def serve(app: str, settings: ServiceSettings) -> None:
    """Run ``app`` (``"<service>.app:create_app"``, a factory) until it is stopped.

    ``kill -USR1 <pid>`` prints every thread's stack to stderr: where a stuck service is.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    uvicorn.run(
        app,
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=BACKLOG,
        # Overload is the app's to answer (shared/admission.py: 503, Retry-After, a problem
        # document). uvicorn's own limit would count idle keep-alive connections as work
        # and answer a bare 503 with no Retry-After, closing the connection.
        limit_concurrency=None,
    )


async def reseal(settings: ServiceSettings, sealed: Mapping[str, SealedIn | Kept]) -> int:
    """Re-seal the service's database under the current key; 0 when nothing is left
    under another key, 1 otherwise."""
    cipher = FieldCipher.from_settings(settings)
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    try:
        db = client[settings.database_name]
        tallies = await Resealer(cipher).database(db, sealed)
    finally:
        await client.close()
    typer.echo(report(tallies, sealed, cipher.current_key_id))
    return 1 if any(t.left for t in tallies.values()) else 0


def service_command(
    app: str,
    settings_type: type[ServiceSettings],
    sealed: Mapping[str, SealedIn | Kept] | None = None,
) -> typer.Typer:
    """``python -m <service> [reseal]`` for the service whose factory is ``app``; reseal
    where the service seals personal data (``sealed``: where, per collection)."""
    name = app.split(".", 1)[0]
    cli = typer.Typer(
        help=f"The {name} service: with no command, serve it on HTTP_HOST:HTTP_PORT.",
        add_completion=False,
        invoke_without_command=True,
    )

    @cli.callback()
    def run(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            serve(app, settings_type())

    if sealed is None:
        return cli

    @cli.command("reseal")
    def reseal_command() -> None:
        """Re-seal what a retired key sealed under ENCRYPTION_KEY (after a rotation).

        Each value stays bound to its document and field; a run prints what it did
        and exits 1 while values are left under another key."""
        settings = settings_type()
        configure_logging(settings.log_level, settings.log_format, production=False)
        raise typer.Exit(asyncio.run(reseal(settings, sealed or {})))

    return cli
