"""A small client for the registration API, and the sample programs the tests use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.bus import TestBus
from tests.canary import CANARY
from tests.integration.helpers_messaging import eventually
from tests.services import coordinator_headers

RECOVERY_GROUP: dict[str, Any] = {
    "title": "Six-week recovery group",
    "display_name": "Wednesday evening group",
    "kind": "recovery_group",
    "language": "zh",
    "facilitator": "Facilitator Lin",
    "price": {"amount_minor": 90000, "currency": "CNY"},
    "refund_policy": "no_refund",
    "minimum_age": 18,
    "capacity": 8,
    "approval_required": True,
    "safety_questions": [
        {"id": "self_harm", "text": "Are you currently having thoughts of harming yourself?"}
    ],
    "crisis_resources": [{"name": "Crisis line", "contact": "400-161-9995"}],
}


def application(n: int, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"Applicant {n} {CANARY}",
        "email": f"applicant{n}@example.org",
        "age_attested": True,
        "safety_answers": {"self_harm": False},
        "privacy_notice_accepted": True,
        "language": "en",
    }
    body.update(overrides)
    return body


class RegistrationApi:
    """``bus``: where the verification links are read, as the applicant's mailbox gets
    them (``signed_up`` needs it: a sign-up's answer carries no link)."""

    def __init__(self, client: httpx.AsyncClient, bus: TestBus | None = None) -> None:
        self.client = client
        self.coordinator = coordinator_headers()
        self.bus = bus
        self._links: list[dict[str, Any]] | None = None

    async def watch_links(self) -> list[dict[str, Any]]:
        """Every verification request registration publishes from now on."""
        if self._links is None:
            assert self.bus is not None, "RegistrationApi(client, bus) reads the emailed links"
            self._links = await self.bus.listen(
                "internal", "registration.email_verification_requested"
            )
        return self._links

    async def link_for(
        self, cohort_id: str, email: str, timeout: float = 20
    ) -> tuple[str, str | None]:
        """The registration id and token the verification email to ``email`` carries."""
        links = await self.watch_links()

        def mine(e: dict[str, Any]) -> bool:
            d = e["data"]
            return d["cohort_id"] == cohort_id and d["contact"]["email"] == email

        async def check() -> dict[str, Any]:
            found = [e for e in links if mine(e)]
            assert found, f"no verification email to {email}"
            links.remove(found[0])
            return found[0]["data"]

        data = await eventually(check, timeout=timeout, interval=0.05, what="verification link")
        return data["registration_id"], data["contact"]["access_token"]

    async def verify(self, registration_id: str, token: str | None) -> httpx.Response:
        return await self.client.post(
            f"/registrations/{registration_id}/verify-email",
            headers={"Authorization": f"Bearer {token}"},
        )

    async def program(self, **overrides: Any) -> str:
        r = await self.client.post(
            "/programs", json={**RECOVERY_GROUP, **overrides}, headers=self.coordinator
        )
        assert r.status_code == 201, r.text
        return r.json()["program_id"]

    async def cohort(self, program_id: str, **overrides: Any) -> str:
        r = await self.client.post(
            f"/programs/{program_id}/cohorts",
            json=self.cohort_body(**overrides),
            headers=self.coordinator,
        )
        assert r.status_code == 201, r.text
        return r.json()["cohort_id"]

    @staticmethod
    def cohort_body(**overrides: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        start = now + timedelta(days=10)
        body = {
            "sessions": [
                {
                    "starts_at": (start + timedelta(weeks=w)).isoformat(),
                    "ends_at": (start + timedelta(weeks=w, minutes=90)).isoformat(),
                    "timezone": "Asia/Shanghai",
                }
                for w in range(6)
            ],
            "registration_opens_at": (now - timedelta(days=1)).isoformat(),
            "registration_closes_at": (now + timedelta(days=7)).isoformat(),
        }
        body.update(overrides)
        return body

    async def sign_up(
        self, cohort_id: str, body: dict[str, Any], key: str | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"/cohorts/{cohort_id}/registrations",
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4())},
        )

    async def signed_up(self, cohort_id: str, n: int, **overrides: Any) -> dict[str, Any]:
        """Signed up and verified, as the applicant following the emailed link: the
        sign-up's answer (crisis_resources, ...), the verification's (registration_id,
        status, ...) and the ``access_token``."""
        await self.watch_links()
        body = application(n, **overrides)
        r = await self.sign_up(cohort_id, body)
        assert r.status_code == 202, r.text
        rid, token = await self.link_for(cohort_id, body["email"])
        assert token is not None, "a new address gets a link"
        verified = await self.verify(rid, token)
        assert verified.status_code == 200, verified.text
        return {**r.json(), **verified.json(), "access_token": token}

    async def status(self, registration: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.get(
            f"/registrations/{registration['registration_id']}",
            headers={"Authorization": f"Bearer {registration['access_token']}"},
        )
        assert r.status_code == 200, r.text
        return r.json()

    async def applicant_post(self, registration: dict[str, Any], action: str) -> httpx.Response:
        return await self.client.post(
            f"/registrations/{registration['registration_id']}/{action}",
            headers={"Authorization": f"Bearer {registration['access_token']}"},
        )

    async def coordinator_post(
        self, registration_id: str, action: str, body: dict | None = None
    ) -> httpx.Response:
        return await self.client.post(
            f"/registrations/{registration_id}/{action}", json=body, headers=self.coordinator
        )
