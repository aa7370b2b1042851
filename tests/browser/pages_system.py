"""The whole of Holdspace with its pages, for tests that click through them.

The e2e harness's four services (tests/e2e/harness.py: real processes, broker,
database, SMTP sink), plus the web pages as a fifth process, wired as scripts/up wires
them: the signing link and the console link in emails open the pages, the pages call the
services' APIs. Two coordinator accounts exist (the manual confirmation needs two).
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from registration import seed as registration_seed
from web.accounts import Accounts

from shared import devinfra
from shared.security import ALL_PROGRAMS
from tests.e2e.harness import System
from tests.integration.helpers_notifications import Received
from tests.services import ServiceProcess, coordinator_headers

COORDINATORS = {
    "ana@example.org": ("Ana", "ana-password-123"),
    "bo@example.org": ("Bo", "bo-password-1234"),
}
SHANGHAI = ZoneInfo("Asia/Shanghai")


class PagesSystem(System):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        port = devinfra.free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        self.env.update(
            WEB_PUBLIC_URL=self.web_url,
            CONSENT_PUBLIC_URL=self.web_url,
            COORDINATOR_CONSOLE_URL=f"{self.web_url}/console",
            **{
                f"{s.upper()}_API_URL": self.url(s)
                for s in ("registration", "consent", "payments", "notifications", "progress")
            },
        )
        self.processes["web"] = [ServiceProcess("web", self.env, self.log_dir, port=port)]

    async def add_coordinators(self) -> None:
        accounts = Accounts(self.db("web"))
        for email, (name, password) in COORDINATORS.items():
            await accounts.add(email, name, password, ALL_PROGRAMS)

    async def open_group(
        self,
        title: str,
        capacity: int | None = None,
        translation: dict | None = None,
        **program_fields: Any,
    ) -> str:
        """A recovery group (the seed's, with its consent form) and a cohort open now;
        ``program_fields`` change the seed's program (no approval, a price of 0...)."""
        program = {
            **registration_seed.RECOVERY_GROUP,
            "title": title,
            "translation": translation,
            **program_fields,
        }
        r = await self.http.post(
            f"{self.url('registration')}/programs", json=program, headers=coordinator_headers()
        )
        assert r.status_code == 201, r.text
        now = datetime.now(UTC)
        first = (now + timedelta(days=10)).astimezone(SHANGHAI).replace(hour=19, minute=30)
        sessions = [
            {
                "starts_at": (first + timedelta(weeks=w)).isoformat(),
                "ends_at": (first + timedelta(weeks=w, minutes=90)).isoformat(),
                "timezone": "Asia/Shanghai",
            }
            for w in range(6)
        ]
        r = await self.http.post(
            f"{self.url('registration')}/programs/{r.json()['program_id']}/cohorts",
            json={
                "label": "Thursday evenings",
                "sessions": sessions,
                **({"capacity": capacity} if capacity else {}),
                "registration_opens_at": (now - timedelta(hours=1)).isoformat(),
                "registration_closes_at": (now + timedelta(days=7)).isoformat(),
            },
            headers=coordinator_headers(),
        )
        assert r.status_code == 201, r.text
        return r.json()["cohort_id"]

    async def program_of(self, cohort_id: str) -> str:
        r = await self.http.get(f"{self.url('registration')}/cohorts/{cohort_id}")
        assert r.status_code == 200, r.text
        return r.json()["program_id"]

    async def sign_up_by_api(self, cohort_id: str, email: str) -> dict:
        """Someone else signing up (through the API, as another system could), then
        following the link in the email that asks to verify the address."""
        r = await self.http.post(
            f"{self.url('registration')}/cohorts/{cohort_id}/registrations",
            json={
                "name": "Someone",
                "email": email,
                "age_attested": True,
                "safety_answers": {"self_harm": False, "unsafe_now": False},
                "privacy_notice_accepted": True,
                "language": "en",
            },
            headers={"Idempotency-Key": f"key-{email}"},
        )
        assert r.status_code == 202, r.text
        link = self.link_in(await self.email(email, "verify_email"), "/my/")
        found = re.search(r"/my/([^?]+)\?t=(\S+)", link)
        assert found, link
        rid, token = found.groups()
        r = await self.http.post(
            f"{self.url('registration')}/registrations/{rid}/verify-email",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        return {**r.json(), "access_token": token}

    async def email(self, to: str, template: str, timeout_s: float = 30) -> Received:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [m for m in self.sink.to(to) if m.template == template]
            if found:
                return found[-1]
            await asyncio.sleep(0.2)
        seen = [m.template for m in self.sink.to(to)]
        raise AssertionError(f"no {template} email to {to} in {timeout_s}s (got {seen})")

    def link_in(self, message: Received, path: str) -> str:
        found = re.search(re.escape(self.web_url) + re.escape(path) + r"[^\s\"<]+", message.text)
        assert found, f"no {path} link in {message.template}"
        return found.group(0)
