"""Verify the consent audit trail end to end: ``python -m consent.verify``.

Reads the consent database named by the environment (MONGODB_URL,
HOLDSPACE_DB_PREFIX) and checks the signature chain with CONSENT_CHAIN_KEY (see
consent/audit.py). Prints a summary, or with ``--json`` one JSON object; exits 0
when everything holds, 1 at the first broken link (or a broken anchor or text), 2
on a configuration error. Mount it in the ops tool as
``app.add_typer(consent.verify.app, name="consent")`` for ``ops consent verify``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from pydantic import ValidationError

from consent.audit import AuditReport, verify_database
from consent.settings import ConsentSettings
from shared import mongo
from shared.security import decode_key
from shared.settings import for_running_system

app = typer.Typer(help="Consent audit trail: verify the chain.", no_args_is_help=False)


async def _run(settings: ConsentSettings, use_key: bool) -> AuditReport:
    key = decode_key(settings.consent_chain_key, setting="CONSENT_CHAIN_KEY") if use_key else None
    client = mongo.make_client(settings.mongodb_url)
    try:
        return await verify_database(client[settings.database_name], key)
    finally:
        await client.close()


@app.command("verify")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    no_key: Annotated[
        bool,
        typer.Option("--no-key", help="Check the SHA-256 chain only (without CONSENT_CHAIN_KEY)."),
    ] = False,
) -> None:
    """Check every signature record, its links, anchors and signed texts."""
    try:
        settings = for_running_system(ConsentSettings)
    except ValidationError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    report = asyncio.run(_run(settings, use_key=not no_key))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), default=str))
    else:
        c = report.chain
        if c.ok:
            typer.echo(f"chain ok: {c.records} records, head #{c.head_seq} {c.head_hash}")
        else:
            assert c.broken is not None
            typer.echo(
                f"chain BROKEN at record #{c.broken.seq}: {c.broken.reason} "
                f"({c.records} records verified before it)"
            )
        typer.echo(
            f"anchors: {report.anchors_checked} checked, {len(report.broken_anchors)} broken"
        )
        for anchor in report.broken_anchors:
            typer.echo(
                f"  record #{anchor['seq']} of registration {anchor['registration_id']}: "
                f"{anchor['reason']}"
            )
        typer.echo(
            f"form versions: {report.versions_checked} checked, "
            f"{len(report.broken_versions)} broken {' '.join(report.broken_versions)}".rstrip()
        )
        if report.pending_records:
            typer.echo(f"signatures waiting to be appended: {report.pending_records}")
    raise typer.Exit(0 if report.ok else 1)


if __name__ == "__main__":
    app()
