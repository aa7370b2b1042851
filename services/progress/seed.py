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
from shared.security import Role, issue_token
from shared.settings import CommonSettings, for_running_system


def seed(registration: httpx.Client, progress: httpx.Client) -> list[str]:
    """The titles of the programs given a plan now."""
    given = []
    for program in _ok(registration.get("/programs")).json():
        plan = PLANS.get(program["title"])
        if plan is None:
            continue
        path = f"/programs/{program['program_id']}/plan"
        if _ok(progress.get(path)).json().get("questionnaires"):
            continue  # set already (by this seed or a coordinator)
        _ok(progress.put(path, json=plan))
        given.append(program["title"])
    return given


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise typer.BadParameter(f"{response.request.url}: {response.status_code} {response.text}")
    return response


def main(
    url: str = typer.Option("http://127.0.0.1:8005", help="progress service base URL"),
    registration_url: str = typer.Option(
        "http://127.0.0.1:8001", help="registration service base URL (the programs)"
    ),
) -> None:
    settings = for_running_system(CommonSettings)
    token = issue_token(
        settings.jwt_secret, role=Role.coordinator, subject="seed", ttl_seconds=300, programs="*"
    )
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=registration_url, headers=headers, timeout=30) as registration,
        httpx.Client(base_url=url, headers=headers, timeout=30) as progress,
    ):
        given = seed(registration, progress)
    typer.echo(f"plans set: {len(given)} ({', '.join(given) or 'all present already'})")


if __name__ == "__main__":
    typer.run(main)
