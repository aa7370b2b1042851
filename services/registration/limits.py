"""How many sign-ups are taken just now: per client, so one script cannot fill a
cohort's seats with throwaway addresses, and per cohort, whoever sends them."""

from __future__ import annotations

from fastapi import Request

from registration.settings import RegistrationSettings
from shared.ratelimit import RateLimits, client_address, networks


class SignUpLimits:
    def __init__(self, settings: RegistrationSettings, limits: RateLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or RateLimits()
        self.trusted = networks(settings.trusted_proxies)

    async def sign_up(self, request: Request, cohort_id: str) -> None:
        peer = request.client.host if request.client else None
        client = client_address(peer, request.headers.get("x-forwarded-for"), self.trusted)
        await self.limits.take(self.settings.signup_limit_per_client, "sign-up", client)
        await self.limits.take(
            self.settings.signup_limit_per_cohort, "sign-up-cohort", cohort_id, field="cohort_id"
        )
