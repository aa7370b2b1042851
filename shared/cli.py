"""The ``ops`` tool: operator commands, one sub-app per concern.

Each concern is its own :class:`typer.Typer` added to :data:`app` with ``add_typer``, so
commands can be added without touching the others. Commands read settings from the
environment, like the services do. Output meant for scripts goes to stdout alone
(``TOKEN=$(ops token issue --role coordinator)``); messages go to stderr.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from shared.security import Role, TokenError, issue_token, verify_token
from shared.settings import CommonSettings

app = typer.Typer(name="ops", help="Holdspace operations.", no_args_is_help=True)

token_app = typer.Typer(help="Bearer tokens for coordinators and operators.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def load_settings() -> CommonSettings:
    """Settings from the environment; a refused configuration ends the command, not a trace."""
    try:
        return CommonSettings()
    except ValidationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@token_app.command("issue")
def token_issue(
    role: Annotated[Role, typer.Option(help="Role the token grants.", case_sensitive=False)],
    subject: Annotated[
        str, typer.Option(help="Who the token is for; recorded in the token and audit logs.")
    ] = "ops",
    ttl: Annotated[
        int | None,
        typer.Option(min=1, help="Lifetime in seconds; JWT_TTL_SECONDS when not given."),
    ] = None,
) -> None:
    """Mint a token and print only the token."""
    settings = load_settings()
    seconds = ttl if ttl is not None else settings.jwt_ttl_seconds
    typer.echo(issue_token(settings.jwt_secret, role=role, subject=subject, ttl_seconds=seconds))


@token_app.command("verify")
def token_verify(
    token: Annotated[str, typer.Argument(help="The token, or '-' to read it from stdin.")],
) -> None:
    """Check a token against JWT_SECRET and print whom it is for."""
    settings = load_settings()
    # '-' keeps the token out of shell history and the process list.
    value = sys.stdin.read().strip() if token == "-" else token.strip()
    try:
        principal = verify_token(settings.jwt_secret, value)
    except TokenError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"subject: {principal.subject}")
    typer.echo(f"role: {principal.role.value}")
    typer.echo(f"expires: {principal.expires_at.isoformat()}")
    typer.echo(f"token id: {principal.token_id}")


if __name__ == "__main__":
    app()
