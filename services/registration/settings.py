"""Settings of the registration service (environment variables, see shared/settings.py)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class RegistrationSettings(ServiceSettings):
    service_name: str = Field("registration", description="fixed: names the queue and database")
    http_port: int = Field(8001, description="port of the registration API")
    reconcile_after_s: float = Field(
        60.0, description="a sign-up not on its cohort's ledger after this long is finished"
    )
    reconcile_poll_s: float = Field(15.0, description="how often the reconciler looks")
    idempotency_ttl_s: int = Field(24 * 3600, description="how long an Idempotency-Key is kept")
