"""What the seed commands (``python -m <service>.seed``) share: a client speaking for a
lead coordinator of the running system, and a refusal turned into a clear CLI error."""

from __future__ import annotations

import httpx
import typer

from shared.security import Role, issue_token
from shared.settings import CommonSettings, for_running_system


def lead_headers() -> dict[str, str]:
    """A short coordinator token of every program, from the running system's JWT_SECRET."""
    settings = for_running_system(CommonSettings)
    token = issue_token(
        settings.jwt_secret, role=Role.coordinator, subject="seed", ttl_seconds=300, programs="*"
    )
    return {"Authorization": f"Bearer {token}"}


def lead_client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=lead_headers(), timeout=30)


def ok(response: httpx.Response) -> httpx.Response:
    """The response, or the command's error naming the call and what it answered."""
    if response.status_code >= 400:
        raise typer.BadParameter(f"{response.request.url}: {response.status_code} {response.text}")
    return response
