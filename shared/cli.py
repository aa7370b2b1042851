"""The ``ops`` tool: operator commands, one sub-app per concern.

Each concern is its own :class:`typer.Typer` added to :data:`app` with ``add_typer``, so
commands can be added without touching the others. Commands read settings from the
environment, like the services do. Output meant for scripts goes to stdout alone
(``TOKEN=$(ops token issue --role operator)``); messages go to stderr.

Operations (the work is in shared/ops/; this module parses arguments and renders):

- ``ops status``: every queue, outbox, failed deliveries and health, and a verdict;
- ``ops outbox [SERVICE]``: pending events, the oldest, stuck relay claims;
- ``ops dlq list|show|replay|purge QUEUE``: dead letters, never a body unredacted;
- ``ops registration show ID``: one registration across the four services.

Exit codes: 0 nothing stuck or done; 1 something stuck past a threshold, or an action
not (fully) done; 2 bad usage or configuration; 3 the broker or a database could not
be inspected. ``--json`` prints one JSON document on stdout for machines.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Annotated, Any, TypeVar

import aio_pika
import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console

from shared.ops import render
from shared.ops.settings import OpsSettings
from shared.revocation import revoke_subject, revoke_token
from shared.security import (
    ALL_PROGRAMS,
    MAX_TOKEN_LIFETIME_S,
    Role,
    TokenError,
    issue_token,
    verify_token,
)
from shared.settings import CommonSettings, for_running_system
from shared.topology import SERVICES

app = typer.Typer(name="ops", help="Holdspace operations.", no_args_is_help=True)
SERVICE_COMMANDS = "holdspace.ops"

token_app = typer.Typer(help="Bearer tokens for coordinators and operators.", no_args_is_help=True)
app.add_typer(token_app, name="token")


S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T")


def load_settings(cls: type[S] = CommonSettings) -> S:  # type: ignore[assignment]
    """Settings from the environment; a refused configuration ends the command, not a trace."""
    try:
        return for_running_system(cls)
    except ValidationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@token_app.command("issue")
def token_issue(
    role: Annotated[Role, typer.Option(help="Role the token grants.", case_sensitive=False)],
    subject: Annotated[
        str,
        typer.Option(help="Who the token is for (an account id for a person); recorded in audits."),
    ] = "ops",
    program: Annotated[
        list[str] | None,
        typer.Option(help="A coordinator's program (repeat for several)."),
    ] = None,
    all_programs: Annotated[
        bool, typer.Option(help="A coordinator who sees every program (a lead).")
    ] = False,
    ttl: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_TOKEN_LIFETIME_S,
            help="Lifetime in seconds (12 h at most); JWT_TTL_SECONDS when not given.",
        ),
    ] = None,
) -> None:
    """Mint a token and print only the token. A coordinator's names its programs
    (--program, repeated, or --all-programs); for a console account's own token use
    ``ops web token EMAIL``."""
    settings = load_settings()
    seconds = ttl if ttl is not None else settings.jwt_ttl_seconds
    if role is Role.coordinator and bool(program) == all_programs:
        typer.echo("error: a coordinator token needs --program ... or --all-programs", err=True)
        raise typer.Exit(EXIT_USAGE)
    if role is not Role.coordinator and (program or all_programs):
        typer.echo("error: only a coordinator token names programs", err=True)
        raise typer.Exit(EXIT_USAGE)
    scope = None if role is not Role.coordinator else ALL_PROGRAMS if all_programs else program
    typer.echo(
        issue_token(
            settings.jwt_secret, role=role, subject=subject, ttl_seconds=seconds, programs=scope
        )
    )


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
    if principal.role is Role.coordinator:
        scope = principal.program_ids()
        typer.echo(f"programs: {'all' if scope is None else ', '.join(scope) or 'none'}")


@token_app.command("revoke")
def token_revoke(
    token: Annotated[
        str | None, typer.Argument(help="The token to revoke, or '-' to read it from stdin.")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(help="Revoke every token of this account id issued until now instead."),
    ] = None,
) -> None:
    """Make every service refuse a token (or all of an account's tokens so far), within
    about a second: the revocation is published to each service's queue."""
    from shared.ops.revoke import publish_revocation

    settings = load_settings(OpsSettings)
    if (token is None) == (subject is None):
        typer.echo("error: give a token or --subject, not both", err=True)
        raise typer.Exit(EXIT_USAGE)
    if subject is not None:
        revoked = revoke_subject(subject, "revoked")
    else:
        value = sys.stdin.read().strip() if token == "-" else str(token).strip()
        try:
            principal = verify_token(settings.jwt_secret, value)
        except TokenError as exc:  # expired or forged: no service accepts it anyway
            typer.echo(f"nothing to revoke: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        revoked = revoke_token(principal.token_id, principal.expires_at)
    try:
        event_id = _run(lambda: publish_revocation(settings, revoked))
    except Exception as exc:
        typer.echo(f"error: not published ({type(exc).__name__}); run it again", err=True)
        raise typer.Exit(EXIT_UNINSPECTABLE) from None
    typer.echo(f"revoked: {revoked.token_id or revoked.subject} (event {event_id})")


# --- operations ----------------------------------------------------------------------

EXIT_OK, EXIT_STUCK, EXIT_USAGE, EXIT_UNINSPECTABLE = 0, 1, 2, 3

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
LimitOption = Annotated[
    int, typer.Option(min=1, help="Look at no more than this many messages from the head.")
]


def _console() -> Console:
    # Created per command, so it writes to whatever stdout is then (tests capture it).
    return Console(width=160 if not sys.stdout.isatty() else None, soft_wrap=False)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


async def _with_mongo(settings: OpsSettings, use: Callable[[Any], Awaitable[T]]) -> T:
    from shared import mongo

    client = mongo.make_client(settings.mongodb_url, max_pool_size=8)
    try:
        return await use(client)
    finally:
        await client.close()


@app.command("status")
def status_command(
    as_json: JsonOption = False,
    max_dead: Annotated[
        int, typer.Option("--max-dead", min=0, help="Dead letters tolerated per DLQ.")
    ] = 0,
    max_outbox_age: Annotated[
        float,
        typer.Option("--max-outbox-age", min=0, help="Seconds the oldest pending event may wait."),
    ] = 60.0,
    fail_on_unhealthy: Annotated[
        bool,
        typer.Option(help="Count a service whose /readyz does not answer 200 as stuck."),
    ] = False,
) -> None:
    """Is anything stuck, where and why: queues, outboxes, failed deliveries, health.

    Exit code 0: nothing stuck; 1: stuck past a threshold (dead letters, outbox lag, a
    stuck relay claim, a service queue with messages and no consumer); 3: the broker
    or a database could not be inspected.
    """
    from shared.ops.status import Thresholds, gather_status

    settings = load_settings(OpsSettings)
    thresholds = Thresholds(max_dead, max_outbox_age, fail_on_unhealthy)
    report = _run(lambda: _with_mongo(settings, lambda c: gather_status(settings, thresholds, c)))
    if as_json:
        _print_json(report.to_json())
    else:
        render.status(_console(), report)
    raise typer.Exit(report.exit_code)


@app.command("outbox")
def outbox_command(
    service: Annotated[
        str | None, typer.Argument(help=f"One of {', '.join(SERVICES)}; all when omitted.")
    ] = None,
    as_json: JsonOption = False,
    max_age: Annotated[
        float, typer.Option("--max-age", min=0, help="Seconds the oldest pending event may wait.")
    ] = 60.0,
    show: Annotated[int, typer.Option(min=0, help="Pending events listed per service.")] = 10,
) -> None:
    """Pending outbox events per service: how many, the oldest, stuck relay claims.

    Exit code 1 when an outbox is older than --max-age or a claim is stuck.
    """
    from shared.ops.outbox import inspect_outbox

    settings = load_settings(OpsSettings)
    if service is not None and service not in SERVICES:
        typer.echo(f"unknown service {service!r}: one of {', '.join(SERVICES)}", err=True)
        raise typer.Exit(EXIT_USAGE)
    services = [service] if service else list(SERVICES)

    async def work(client: Any) -> list:
        return list(
            await asyncio.gather(
                *(inspect_outbox(client[settings.database_name(s)], s) for s in services)
            )
        )

    reports = _run(lambda: _with_mongo(settings, work))
    if as_json:
        _print_json({"outbox": [r.to_json(show=show) for r in reports], "max_age_s": max_age})
    else:
        console = _console()
        render.outbox(console, reports)
        for r in reports:
            render.pending_events(console, r, show)
    if any(r.error for r in reports):
        raise typer.Exit(EXIT_UNINSPECTABLE)
    stuck = any(
        r.stuck_claims or (r.oldest_age_s is not None and r.oldest_age_s > max_age) for r in reports
    )
    raise typer.Exit(EXIT_STUCK if stuck else EXIT_OK)


# --- dead letters ----------------------------------------------------------------------

dlq_app = typer.Typer(
    help="Dead-letter queues: list, show (redacted), replay, purge.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")

QueueArgument = Annotated[
    str,
    typer.Argument(
        help="A service (registration, ...), '<service>.dlq' or the full DLQ name.",
        show_default=False,
    ),
]


def _resolve(settings: OpsSettings, queue: str) -> tuple[str, str | None]:
    try:
        return settings.resolve_dlq(queue)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _open(settings: OpsSettings, queue: str):
    from shared.ops.deadletters import open_dlq

    name, service = _resolve(settings, queue)
    service_queue = settings.topology(service).queue if service else name.removesuffix(".dlq")
    return open_dlq(settings.rabbitmq_url, name, service_queue, settings.ops_timeout_s)


def _dlq_run(settings: OpsSettings, queue: str, work: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        async with _open(settings, queue) as dlq:
            return await work(dlq)

    try:
        return _run(run)
    except aio_pika.exceptions.ChannelClosed as exc:
        typer.echo(f"no such queue: {queue} ({type(exc).__name__})", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPConnectionError) as exc:
        typer.echo(f"broker not reachable: {type(exc).__name__}", err=True)
        raise typer.Exit(EXIT_UNINSPECTABLE) from None


@dlq_app.command("list")
def dlq_list(queue: QueueArgument, as_json: JsonOption = False, limit: LimitOption = 1000) -> None:
    """Dead letters with event type, id, attempts, first and last error (never bodies)."""
    settings = load_settings(OpsSettings)

    async def work(dlq: Any) -> tuple[str, list]:
        return dlq.name, [letter for _, letter in await dlq.fetch(limit)]

    name, letters = _dlq_run(settings, queue, work)
    if as_json:
        _print_json(
            {"queue": name, "count": len(letters), "dead_letters": [d.to_json() for d in letters]}
        )
    else:
        render.dead_letters(_console(), name, letters)


@dlq_app.command("show")
def dlq_show(
    queue: QueueArgument,
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The event (message) id.")],
    as_json: JsonOption = False,
    limit: LimitOption = 10000,
) -> None:
    """One dead letter: its properties, headers and body, personal fields redacted."""
    from shared.ops.deadletters import shown_body

    settings = load_settings(OpsSettings)

    async def work(dlq: Any) -> dict | None:
        found = await dlq.find(event_id, limit)
        if found is None:
            return None
        message, letter = found
        headers = {
            k: v.decode(errors="replace") if isinstance(v, bytes | bytearray) else v
            for k, v in (message.headers or {}).items()
            if k.startswith("x-holdspace-")
        }
        return {
            "queue": dlq.name,
            **letter.to_json(),
            "content_type": message.content_type,
            "app_id": message.app_id,
            "headers": headers,
            "body": shown_body(message),
        }

    shown = _dlq_run(settings, queue, work)
    if shown is None:
        typer.echo(f"no dead letter with id {event_id} in the first {limit} messages", err=True)
        raise typer.Exit(EXIT_STUCK)
    if as_json:
        _print_json(shown)
    else:
        console = _console()
        for key, value in shown.items():
            if key != "body":
                console.print(f"[bold]{key}[/bold]: {value}")
        console.print("[bold]body[/bold] (personal fields redacted):")
        console.print_json(json.dumps(shown["body"], default=str))


def _selection(ids: list[str] | None, types: list[str] | None, everything: bool):
    from shared.ops.deadletters import Selection

    selection = Selection.of(ids or (), types or (), everything)
    if selection.empty:
        typer.echo("say which: --id ID, --type TYPE (each repeatable) or --all", err=True)
        raise typer.Exit(EXIT_USAGE)
    return selection


IdsOption = Annotated[list[str] | None, typer.Option("--id", help="An event id (repeatable).")]
TypesOption = Annotated[
    list[str] | None, typer.Option("--type", help="An event type (repeatable).")
]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter in the queue.")]


def _finish(outcomes: list, selection: Any, as_json: bool, title: str, queue: str) -> None:
    missing = sorted(selection.ids - {o.letter.message_id for o in outcomes})
    if as_json:
        _print_json(
            {
                "queue": queue,
                "done": sum(1 for o in outcomes if o.done),
                "failed": sum(1 for o in outcomes if not o.done),
                "not_found": missing,
                "results": [o.to_json() for o in outcomes],
            }
        )
    else:
        console = _console()
        render.outcomes(console, title, outcomes)
        for event_id in missing:
            console.print(f"[yellow]not found[/yellow]: {event_id}")
    if missing or any(not o.done for o in outcomes):
        raise typer.Exit(EXIT_STUCK)


@dlq_app.command("replay")
def dlq_replay(
    queue: QueueArgument,
    ids: IdsOption = None,
    types: TypesOption = None,
    everything: AllOption = False,
    to_queue: Annotated[
        bool,
        typer.Option(
            "--to-queue",
            help="Deliver to the failed service's own queue only, not the original "
            "exchange and routing key (which reach every subscriber again).",
        ),
    ] = False,
    as_json: JsonOption = False,
    limit: LimitOption = 10000,
) -> None:
    """Republish dead letters (confirmed) to their original exchange and routing key.

    Each leaves the DLQ only after the broker confirmed its copy. The services' inboxes
    make a replayed event take effect once, even if it is replayed twice.
    """
    settings = load_settings(OpsSettings)
    selection = _selection(ids, types, everything)

    async def work(dlq: Any) -> tuple[str, list]:
        return dlq.name, await dlq.replay(selection, limit, to_service_queue=to_queue)

    name, outcomes = _dlq_run(settings, queue, work)
    _finish(outcomes, selection, as_json, f"Replayed from {name}", name)


@dlq_app.command("purge")
def dlq_purge(
    queue: QueueArgument,
    ids: IdsOption = None,
    types: TypesOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    limit: LimitOption = 10000,
) -> None:
    """Drop dead letters for good: all of them, or those given by --id / --type."""
    from shared.ops.deadletters import Selection

    settings = load_settings(OpsSettings)
    selection = Selection.of(ids or (), types or ())
    name, _ = _resolve(settings, queue)
    what = "every dead letter" if selection.empty else "the selected dead letters"
    if not yes and not typer.confirm(f"Drop {what} in {name}? This cannot be undone", err=True):
        typer.echo("nothing purged", err=True)
        raise typer.Exit(EXIT_STUCK)

    if selection.empty:
        purged = _dlq_run(settings, queue, lambda dlq: dlq.purge_all())
        if as_json:
            _print_json({"queue": name, "purged": purged})
        else:
            typer.echo(f"purged {purged} message(s) from {name}")
        return
    outcomes = _dlq_run(settings, queue, lambda dlq: dlq.remove(selection, limit))
    _finish(outcomes, selection, as_json, f"Purged from {name}", name)


# --- one registration ------------------------------------------------------------------

registration_app = typer.Typer(
    help="Follow one registration across the services.", no_args_is_help=True
)
app.add_typer(registration_app, name="registration")


def _mount_service_commands() -> None:
    """Commands services ship for operators, found by the entry points they declare
    (group ``holdspace.ops`` in pyproject.toml): the common library names no service."""
    for entry in entry_points(group=SERVICE_COMMANDS):
        try:
            commands = entry.load()
        except ImportError:  # that service is not installed in this environment
            continue
        app.add_typer(commands, name=entry.name, help=commands.info.help)


_mount_service_commands()


@registration_app.command("show")
def registration_show(
    registration_id: Annotated[str, typer.Argument(metavar="ID", help="The registration id.")],
    as_json: JsonOption = False,
    dlq: Annotated[bool, typer.Option(help="Search the dead-letter queues too.")] = True,
) -> None:
    """States, pending events, deliveries and dead letters of one registration, by its
    correlation id, in every service; never personal data. Exit code 1 when not found."""
    from shared.ops.trace import trace_registration

    settings = load_settings(OpsSettings)
    trace = _run(
        lambda: _with_mongo(
            settings, lambda c: trace_registration(c, settings, registration_id, search_dlq=dlq)
        )
    )
    if as_json:
        _print_json(trace.to_json())
    else:
        render.trace(_console(), trace)
    if any(s.error for s in trace.services):
        raise typer.Exit(EXIT_UNINSPECTABLE)
    raise typer.Exit(EXIT_OK if trace.found else EXIT_STUCK)


@registration_app.command("timeline")
def registration_timeline(
    registration_id: Annotated[str, typer.Argument(metavar="ID", help="The registration id.")],
    traces: Annotated[
        str | None,
        typer.Option(help="Directory of the services' span files (default: $VAR_DIR/traces)."),
    ] = None,
) -> None:
    """Where one sign-up spent its time: its trace across the services, step by step,
    from the span files the services write (TRACE_FILE). Exit code 1 when not found."""
    import os
    from pathlib import Path

    from shared.ops import spans

    directory = Path(traces or Path(os.environ.get("VAR_DIR") or "var") / "traces")
    found = spans.timeline(spans.read_spans(directory), registration_id)
    if not found:
        typer.echo(f"no trace of {registration_id} in {directory}/*.jsonl", err=True)
        raise typer.Exit(EXIT_STUCK)
    typer.echo(spans.render(found))


if __name__ == "__main__":
    app()
