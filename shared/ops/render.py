"""Rich tables for people; the commands print JSON for machines instead (``--json``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from shared.ops.deadletters import DeadLetter, Outcome
from shared.ops.outbox import OutboxReport
from shared.ops.status import StatusReport
from shared.ops.trace import RegistrationTrace


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def status(console: Console, report: StatusReport) -> None:
    q = report.queues
    table = Table(title=f"Queues (source: {q.source or 'none'})", caption=q.note)
    for column in ("queue", "role", "ready", "unacked", "consumers", "in/s", "out/s"):
        table.add_column(column, justify="left" if column in ("queue", "role") else "right")
    for s in q.queues:
        style = None
        if s.role == "dlq" and ((s.ready or 0) + (s.unacked or 0)) > 0:
            style = "bold red"
        elif not s.exists:
            style = "dim"
        table.add_row(
            s.name if s.exists else f"{s.name} (missing)",
            s.role,
            _n(s.ready),
            _n(s.unacked),
            _n(s.consumers),
            _n(s.rate_in),
            _n(s.rate_out),
            style=style,
        )
    console.print(table)
    outbox(console, report.outboxes)
    d = report.deliveries
    failed = d.get("failed")
    console.print(
        f"Failed deliveries (notifications): {'n/a' if failed is None else failed}"
        f"  [dim]({d.get('source')})[/dim]"
    )
    a = report.alerts
    if a:
        waiting = a.get("unacknowledged")
        console.print(
            f"Safety flags not acknowledged: {'n/a' if waiting is None else waiting}"
            f", sent again: {_n(a.get('escalated'))}  [dim]({a.get('source')})[/dim]"
        )
    health = Table(title="Health (/readyz)")
    for column in ("service", "status", "url", "detail"):
        health.add_column(column)
    for h in report.health:
        health.add_row(
            h.service, h.status, h.url, _n(h.detail), style=None if h.status == "ok" else "yellow"
        )
    console.print(health)
    for w in report.warnings:
        console.print(f"[yellow]warning[/yellow] {w.kind} {w.where}: {w.detail}")
    for p in report.problems:
        console.print(f"[bold red]STUCK[/bold red] {p.kind} {p.where}: {p.detail}")
    verdict = {0: "[green]nothing stuck[/green]", 1: "[bold red]something is stuck[/bold red]"}
    console.print(verdict.get(report.exit_code, "[yellow]could not inspect everything[/yellow]"))


def outbox(console: Console, reports: list[OutboxReport]) -> None:
    table = Table(title="Outboxes")
    columns = ("service", "database", "pending", "oldest", "oldest event", "claims", "stuck")
    for column in (*columns, "set aside"):
        table.add_column(column)
    for o in reports:
        if o.error:
            table.add_row(o.service, o.database, "?", "?", o.error, "?", "?", "?", style="red")
            continue
        oldest = o.oldest
        active = sum(1 for c in o.claims if not c.expired)
        expired = sum(1 for c in o.claims if c.expired)
        table.add_row(
            o.service,
            o.database if o.exists else f"{o.database} (absent)",
            str(o.pending),
            _age(o.oldest_age_s),
            f"{oldest.type} {oldest.id}" if oldest else "-",
            f"{active} active, {expired} expired",
            str(len(o.stuck_claims)),
            str(len(o.parked)),
            style="red" if o.stuck_claims or o.parked else None,
        )
    console.print(table)
    for o in reports:
        for e in o.parked:
            console.print(
                f"[bold red]SET ASIDE[/bold red] {o.service} {e.type} {e.id}"
                f" ({e.collection}:{e.aggregate_id}): {e.error}"
            )


def pending_events(console: Console, report: OutboxReport, show: int) -> None:
    if not report.events:
        return
    table = Table(title=f"{report.service}: oldest pending events")
    for column in ("age", "type", "event id", "aggregate", "correlation id"):
        table.add_column(column)
    for e in report.events[:show]:
        age = (report.checked_at - e.time).total_seconds()
        table.add_row(
            _age(age), e.type, e.id, f"{e.collection}:{e.aggregate_id}", _n(e.correlationid)
        )
    console.print(table)


def dead_letters(console: Console, queue: str, letters: list[DeadLetter]) -> None:
    table = Table(title=f"Dead letters in {queue} ({len(letters)})")
    for column in ("#", "type", "event id", "attempts", "first error", "last error", "origin"):
        table.add_column(column, overflow="fold", no_wrap=column in ("type", "event id"))
    for d in letters:
        table.add_row(
            str(d.position),
            _n(d.type),
            _n(d.message_id),
            _n(d.attempts),
            _n(d.first_error),
            _n(d.last_error),
            f"{d.original_exchange or '(default)'} -> {_n(d.original_routing_key)}",
        )
    console.print(table)


def outcomes(console: Console, title: str, results: list[Outcome]) -> None:
    table = Table(title=title)
    for column in ("event id", "type", "done", "target", "detail"):
        table.add_column(column, overflow="fold", no_wrap=column in ("event id", "type"))
    for o in results:
        table.add_row(
            _n(o.letter.message_id),
            _n(o.letter.type),
            "yes" if o.done else "NO",
            o.target,
            _n(o.detail),
            style=None if o.done else "red",
        )
    console.print(table)


def trace(console: Console, t: RegistrationTrace) -> None:
    console.print(
        f"Registration {t.registration_id}: "
        + (f"status [bold]{t.status}[/bold]" if t.status else "status unknown")
        + ("" if t.found else " [yellow](nothing found anywhere)[/yellow]")
    )
    for s in t.services:
        table = Table(title=f"{s.service} ({s.database})")
        table.add_column("where")
        table.add_column("what", overflow="fold")
        if s.error:
            table.add_row("error", s.error, style="red")
        for doc in s.documents:
            fields = ", ".join(f"{k}={_n(v)}" for k, v in doc["fields"].items())
            table.add_row(doc["collection"], fields)
        for e in s.pending_events:
            table.add_row("outbox", f"{e['type']} {e['id']} pending {_age(e['age_s'])}")
        if not (s.error or s.documents or s.pending_events):
            table.add_row("-", "nothing about this registration")
        console.print(table)
    if t.dead_letters:
        table = Table(title="Dead letters about it")
        for column in ("queue", "type", "event id", "attempts", "last error"):
            table.add_column(column, overflow="fold", no_wrap=column != "last error")
        for d in t.dead_letters:
            table.add_row(
                d["queue"],
                _n(d["type"]),
                _n(d["message_id"]),
                _n(d["attempts"]),
                _n(d["last_error"]),
            )
        console.print(table)
    else:
        console.print(
            "No dead letters about it."
            + (f" ({t.dead_letters_note})" if t.dead_letters_note else "")
        )
