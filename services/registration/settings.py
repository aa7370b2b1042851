"""Settings of the registration service (environment variables, see shared/settings.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.ratelimit import networks
from shared.settings import ServiceSettings


class RegistrationSettings(ServiceSettings):
    service_name: str = Field("registration", description="fixed: names the queue and database")
    http_port: int = Field(8001, description="port of the registration API")
    reconcile_after_s: float = Field(
        60.0, description="a sign-up not on its cohort's ledger after this long is finished"
    )
    reconcile_poll_s: float = Field(15.0, description="how often the reconciler looks")
    idempotency_ttl_s: int = Field(24 * 3600, description="how long an Idempotency-Key is kept")
    verify_within_s: int = Field(
        24 * 3600,
        gt=0,
        description="how long a sign-up's emailed link works; never verified, it is deleted",
    )
    forget_poll_s: float = Field(
        300.0, gt=0, description="how often sign-ups never verified and old keys are deleted"
    )
    signup_limit_per_client: str = Field(
        "10/minute", description="sign-ups one client may send (limits syntax; empty: none)"
    )
    signup_limit_per_cohort: str = Field(
        "30/minute", description="sign-ups one cohort takes (limits syntax; empty: none)"
    )
    trusted_proxies: str = Field(
        "127.0.0.1,::1",
        description="peers whose X-Forwarded-For names the client (the web pages)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: str) -> str:
        networks(value)  # raises, naming the value, when one is not an address or network
        return value
