"""Settings of the web pages (environment variables, see shared/settings.py)."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field, model_validator

from shared.settings import ServiceSettings

# Development-only cookie key: known, so refused in production.
DEV_SESSION_SECRET = "dev-only-web-session-secret-change-me-0123456789"


class WebSettings(ServiceSettings):
    """The common service settings (the database, the JWT key the console's calls are
    signed with, logging), plus the APIs it calls and its session cookie."""

    service_name: Literal["web"] = Field("web", description="fixed: names the database")
    http_port: int = Field(8000, description="port of the web pages")
    max_body_bytes: int = Field(
        2 * 1024 * 1024,
        description="largest accepted request body: above the QR code form's own limit (256"
        " KiB), so that a larger image is named on the form with what was typed kept",
    )
    web_public_url: str = Field(
        "http://127.0.0.1:8000", description="base URL of these pages, as links in emails use"
    )
    registration_api_url: str = Field("http://127.0.0.1:8001", description="registration API")
    consent_api_url: str = Field("http://127.0.0.1:8002", description="consent API")
    payments_api_url: str = Field("http://127.0.0.1:8003", description="payments API")
    notifications_api_url: str = Field("http://127.0.0.1:8004", description="notifications API")
    progress_api_url: str = Field("http://127.0.0.1:8005", description="progress API")
    api_timeout_s: float = Field(10.0, description="time limit of one call to a service", gt=0)
    session_secret: str = Field(
        DEV_SESSION_SECRET, description="key signing the session cookie (32+ characters)"
    )
    session_ttl_s: int = Field(
        8 * 3600, description="a session ends this long after it began", ge=60
    )
    coordinator_token_ttl_s: int = Field(
        900, description="lifetime of the token the console calls the services with", ge=60
    )
    sign_in_limit_per_client: str = Field(
        "10/minute", description="console sign-in attempts one client may make (limits syntax)"
    )
    sign_in_limit_per_account: str = Field(
        "10/minute", description="console sign-in attempts for one email (limits syntax)"
    )
    crisis_lines_zh: str = Field(
        "全国心理援助热线 12356|北京心理危机研究与干预中心 010-82951332",
        description="crisis lines shown on every page in Chinese: 'name number' joined by |",
    )
    crisis_lines_en: str = Field(
        "China national mental health line 12356|Emergency 120 (ambulance) or 110 (police)",
        description="crisis lines shown in English: joined by |",
    )

    @property
    def secure_cookies(self) -> bool:
        return self.web_public_url.startswith("https://")

    @model_validator(mode="after")
    def _refuse_dev_session_secret_in_production(self) -> WebSettings:
        if self.is_production:
            if self.session_secret == DEV_SESSION_SECRET or len(self.session_secret) < 32:
                raise ValueError("SESSION_SECRET must be set (32+ characters) in production")
            if not self.secure_cookies:
                raise ValueError("WEB_PUBLIC_URL must be https in production")
        return self


def new_session_secret() -> str:
    return secrets.token_urlsafe(32)
