"""Coordinator accounts for the console, as ``ops web ...`` (pyproject's holdspace.ops).

    ops web add-coordinator ana@example.org --name "Ana" --program <id>   # asks for the password
    ops web add-coordinator lee@example.org --name "Lee" --all-programs   # a lead
    echo "$PW" | ops web add-coordinator ana@example.org --name Ana --program <id> --password-stdin
    ops web coordinators
    ops web token ana@example.org          # a token for the API, as the console mints it
    ops web deactivate-coordinator ana@example.org   # and every token of it is revoked

Reads MONGODB_URL and HOLDSPACE_DB_PREFIX like the web service. Adding an email that
exists sets its name and password again (a reset), activates it, and sets its programs
when --program or --all-programs is given (else keeps them).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from pymongo import AsyncMongoClient

from shared.security import ALL_PROGRAMS, Role, issue_token, normalize_email
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
    program: Annotated[
        list[str] | None,
        typer.Option(help="a program the coordinator sees and acts on (repeat for several)"),
    ] = None,
    all_programs: Annotated[
        bool, typer.Option(help="every program, present and future (a lead)")
    ] = False,
    password_stdin: Annotated[bool, typer.Option(help="read the password from stdin")] = False,
) -> None:
    """Create a coordinator account (or reset its password, and set its programs)."""
    if program and all_programs:
        typer.echo("error: give --program or --all-programs, not both", err=True)
        raise typer.Exit(2)
    scope = ALL_PROGRAMS if all_programs else program or None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        typer.echo(f"error: the password must have at least {MIN_PASSWORD} characters", err=True)
        raise typer.Exit(2)
    account_id = asyncio.run(
        _with_accounts(lambda accounts: accounts.add(email, name, password, scope))
    )
    typer.echo(f"coordinator {email} ({account_id}) added: they sign in at the console (/console)")
    if scope is None:
        typer.echo("programs unchanged (a new account sees none until given --program)")


def _scope_text(programs: object) -> str:
    if programs == ALL_PROGRAMS:
        return "all programs"
    return ",".join(programs) if isinstance(programs, list) and programs else "no programs"


@app.command("coordinators")
def coordinators() -> None:
    """List the accounts (never their passwords): email, id, name, state, programs."""
    for doc in asyncio.run(_with_accounts(lambda accounts: accounts.all())):
        state = "active" if doc.get("active") else "deactivated"
        scope = _scope_text(doc.get("programs", ALL_PROGRAMS))
        typer.echo(f"{doc['_id']}\t{doc['account_id']}\t{doc['name']}\t{state}\t{scope}")


@app.command("token")
def token(
    email: str,
    ttl: Annotated[int, typer.Option(min=60, max=12 * 3600, help="seconds")] = 3600,
) -> None:
    """A coordinator token for an active account: its id and programs, as the console's."""
    settings = for_running_system(WebSettings)
    account = asyncio.run(_with_accounts(lambda accounts: accounts.current(normalize_email(email))))
    if account is None:
        typer.echo(f"error: no active coordinator {email}", err=True)
        raise typer.Exit(1)
    typer.echo(
        issue_token(
            settings.jwt_secret,
            role=Role.coordinator,
            subject=account["account_id"],
            programs=account["programs"],
            ttl_seconds=ttl,
        )
    )


@app.command("deactivate-coordinator")
def deactivate(email: str) -> None:
    """Stop an account from signing in (its sessions end at their next request) and revoke
    its tokens in every service (published by the pages' relay within OUTBOX_POLL_S)."""
    if not asyncio.run(_with_accounts(lambda accounts: accounts.deactivate(email))):
        typer.echo(f"error: no coordinator {email}", err=True)
        raise typer.Exit(1)
    typer.echo(f"coordinator {email} deactivated")
