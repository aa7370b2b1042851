"""Give the seed programs their work between sessions (progress/seed_plans.py).

    python -m progress.seed --url http://127.0.0.1:8005 --registration-url http://127.0.0.1:8001

Finds each program by its title in registration's program list and sets its plan in
progress, through both services' coordinator APIs (minting a coordinator token from
JWT_SECRET). A program that already has a plan keeps it: running this again changes
nothing a coordinator set.
"""

from __future__ import annotations

import httpx
import typer

from progress.seed_plans import PLANS
from shared.seeding import lead_client, ok


def seed(registration: httpx.Client, progress: httpx.Client) -> list[str]:
    """The titles of the programs given a plan now."""
    given = []
    for program in ok(registration.get("/programs")).json():
        plan = PLANS.get(program["title"])
        if plan is None:
            continue
        path = f"/programs/{program['program_id']}/plan"
        if ok(progress.get(path)).json().get("questionnaires"):
            continue  # set already (by this seed or a coordinator)
        ok(progress.put(path, json=plan))
        given.append(program["title"])
    return given


def main(
    url: str = typer.Option("http://127.0.0.1:8005", help="progress service base URL"),
    registration_url: str = typer.Option(
        "http://127.0.0.1:8001", help="registration service base URL (the programs)"
    ),
) -> None:
    with lead_client(registration_url) as registration, lead_client(url) as progress:
        given = seed(registration, progress)
    typer.echo(f"plans set: {len(given)} ({', '.join(given) or 'all present already'})")


if __name__ == "__main__":
    typer.run(main)
