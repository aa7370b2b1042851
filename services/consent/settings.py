"""Settings of the consent service (environment variables, see shared/settings.py)."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import Field, model_validator

from shared.settings import ServiceSettings

# Development-only chain key: known, so refused in production.
DEV_CONSENT_CHAIN_KEY = base64.b64encode(b"dev-only-consent-chain-key-32byt").decode()


class ConsentSettings(ServiceSettings):
    service_name: Literal["consent"] = Field(
        "consent", description="fixed: names the queue and database"
    )
    http_port: int = Field(8002, description="port of the consent API")
    consent_public_url: str = Field(
        "http://127.0.0.1:8000",
        description="base URL of the web pages, whose /consents/<token> page applicants sign on",
    )
    consent_chain_key: str = Field(
        DEV_CONSENT_CHAIN_KEY,
        description="base64 32-byte HMAC key sealing each signature record of the chain",
    )
    consent_default_ttl_s: int = Field(
        7 * 24 * 3600, description="signing link lifetime when the registration's hold has none"
    )
    reconsent_ttl_s: int = Field(
        14 * 24 * 3600, description="re-consent link lifetime when no hold bounds it"
    )
    reconsent_poll_s: float = Field(2.0, description="how often pending re-consent is looked for")
    record_retry_after_s: float = Field(
        30.0, description="a signature not yet in the chain after this long is appended again"
    )

    @model_validator(mode="after")
    def _refuse_dev_chain_key_in_production(self) -> ConsentSettings:
        if self.is_production:
            if self.consent_chain_key == DEV_CONSENT_CHAIN_KEY:
                raise ValueError("CONSENT_CHAIN_KEY must be set in production")
            if not self.consent_public_url.startswith("https://"):
                raise ValueError("CONSENT_PUBLIC_URL must be https in production")
        return self

    def signing_url(self, token: str) -> str:
        return f"{self.consent_public_url.rstrip('/')}/consents/{token}"
