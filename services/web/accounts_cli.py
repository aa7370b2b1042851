"""Coordinator accounts for the console, as ``ops web ...`` (pyproject's holdspace.ops).

    ops web add-coordinator ana@example.org --name "Ana"      # asks for the password
    echo "$PW" | ops web add-coordinator ana@example.org --name Ana --password-stdin
    ops web coordinators
    ops web deactivate-coordinator ana@example.org

Reads MONGODB_URL and HOLDSPACE_DB_PREFIX like the web service. Adding an email that
exists sets its name and password again (a reset) and activates it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from pymongo import AsyncMongoClient

from shared.settings import for_running_system
from web.accounts import MIN_PASSWORD, Accounts
from web.settings import WebSettings

app = typer.Typer(help="Coordinator accounts of the web console.", no_args_is_help=True)


async def _with_accounts(work):  # type: ignore[no-untyped-def]
    settings = for_running_system(WebSettings)
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
    try:
        return await work(Accounts(client[settings.database_name]))
    finally:
        await client.close()


@app.command("add-coordinator")
def add_coordinator(
    email: str,
    name: Annotated[str, typer.Option(help="shown in the console and in the audit")],
    password_stdin: Annotated[bool, typer.Option(help="read the password from stdin")] = False,
) -> None:
    """Create a coordinator account (or reset its password)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        typer.echo(f"error: the password must have at least {MIN_PASSWORD} characters", err=True)
        raise typer.Exit(2)
    asyncio.run(_with_accounts(lambda accounts: accounts.add(email, name, password)))
    typer.echo(f"coordinator {email} added: they sign in at the console (/console on the pages)")


@app.command("coordinators")
def coordinators() -> None:
    """List the accounts (never their passwords)."""
    for doc in asyncio.run(_with_accounts(lambda accounts: accounts.all())):
        state = "active" if doc.get("active") else "deactivated"
        typer.echo(f"{doc['_id']}\t{doc['name']}\t{state}")


@app.command("deactivate-coordinator")
def deactivate(email: str) -> None:
    """Stop an account from signing in (its sessions end at their next request)."""
    if not asyncio.run(_with_accounts(lambda accounts: accounts.deactivate(email))):
        typer.echo(f"error: no coordinator {email}", err=True)
        raise typer.Exit(1)
    typer.echo(f"coordinator {email} deactivated")
