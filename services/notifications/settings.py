"""Settings of the notifications service (environment variables, see shared/settings.py)."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Literal

from pydantic import Field, model_validator

from notifications.domain.quiet import QuietHours
from notifications.domain.reminders import parse_offsets
from shared.settings import ServiceSettings

# Placeholders that appear in examples and compose files: refused in production.
DEV_NOTIFICATION_SECRETS = frozenset({"dev-only-smtp-password", "changeme", "password"})
# Where coordinator messages go in development when no address is set: the mail sink
# takes it, so a safety alert is seen there rather than dropped.
DEV_COORDINATOR_EMAIL = "coordinators@holdspace.invalid"


class NotificationsSettings(ServiceSettings):
    service_name: str = Field("notifications", description="fixed: names the queue and database")
    http_port: int = Field(8004, description="port of the notifications API")

    # --- email (SMTP) ---
    smtp_host: str = Field("127.0.0.1", description="SMTP server")
    smtp_port: int = Field(1025, description="SMTP port (587 STARTTLS, 465 implicit TLS)")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "none", description="none, starttls or tls (implicit TLS)"
    )
    smtp_validate_certs: bool = Field(True, description="verify the SMTP server's certificate")
    smtp_username: str | None = Field(None, description="SMTP login, when the server wants one")
    smtp_password: str | None = Field(None, description="SMTP password (a secret)")
    smtp_timeout_s: float = Field(10.0, description="one SMTP conversation's time limit", gt=0)
    mail_from: str = Field(
        "Holdspace <no-reply@holdspace.invalid>", description="From header of every message"
    )
    message_id_domain: str = Field(
        "holdspace.invalid", description="right-hand side of Message-ID headers"
    )

    # --- coordinators ---
    coordinator_emails: str = Field(
        "",
        description=(
            "comma-separated addresses that get coordinator messages; production needs "
            "these or CHAT_WEBHOOK_URL (safety alerts must reach a person)"
        ),
    )
    coordinator_language: Literal["en", "zh"] = Field(
        "en", description="language of coordinator messages"
    )
    web_public_url: str = Field(
        "http://127.0.0.1:8000", description="the web pages, where applicants' links open"
    )
    coordinator_console_url: str = Field(
        "http://127.0.0.1:8000/console",
        description="the web console, where coordinators review sign-ups (in messages)",
    )
    chat_webhook_url: str | None = Field(
        None, description="group robot webhook for coordinator alerts (its key is a secret)"
    )
    chat_format: Literal["wecom", "dingtalk", "slack", "feishu"] = Field(
        "wecom", description="JSON shape the chat robot takes"
    )
    chat_timeout_s: float = Field(10.0, description="chat webhook time limit", gt=0)

    # --- safety alerts ---
    safety_ack_s: float = Field(
        1800.0,
        description="a safety alert no coordinator acknowledged after this is sent again",
        gt=0,
    )
    safety_escalations: int = Field(
        3, description="how many times an unacknowledged safety alert is sent again", ge=1
    )

    # --- timing ---
    quiet_hours_start: str = Field("22:00", description="quiet hours start, recipient's local time")
    quiet_hours_end: str = Field("08:00", description="quiet hours end (equal to start: none)")
    reminder_offsets_s: str = Field(
        "86400,3600", description="default reminders, seconds before each session"
    )
    reminder_window_s: float = Field(
        900.0, description="a reminder later than this after its time is dropped", gt=0
    )
    delivery_max_attempts: int = Field(8, description="attempts before a delivery fails", ge=1)
    delivery_retry_base_s: float = Field(30.0, description="first retry delay; doubles", gt=0)
    delivery_retry_max_s: float = Field(3600.0, description="longest retry delay", gt=0)
    sending_claim_s: float = Field(
        120.0, description="an attempt not finished after this is tried again", gt=0
    )
    archive_after_s: float = Field(
        300.0, description="finished deliveries leave the working set after this", ge=0
    )
    archive_poll_s: float = Field(30.0, description="how often finished deliveries are moved")

    @property
    def quiet_hours(self) -> QuietHours:
        return QuietHours.parse(self.quiet_hours_start, self.quiet_hours_end)

    @property
    def default_reminder_offsets(self) -> tuple[int, ...]:
        return parse_offsets(self.reminder_offsets_s)

    @property
    def coordinator_addresses(self) -> list[str]:
        given = [a.strip() for a in self.coordinator_emails.split(",") if a.strip()]
        if given or self.is_production or self.chat_webhook_url:
            return given
        return [DEV_COORDINATOR_EMAIL]

    @model_validator(mode="after")
    def _check(self) -> NotificationsSettings:
        self.quiet_hours  # noqa: B018 - parses, or raises naming the value's field
        self.default_reminder_offsets  # noqa: B018
        if not self.is_production:
            return self
        if not self.coordinator_addresses and not self.chat_webhook_url:
            raise ValueError(
                "COORDINATOR_EMAILS or CHAT_WEBHOOK_URL must be set in production: "
                "a safety alert has to reach a person"
            )
        if self.smtp_password is not None and self.smtp_password in DEV_NOTIFICATION_SECRETS:
            raise ValueError("SMTP_PASSWORD must be set in production")
        if self.smtp_username and not self.smtp_password:
            raise ValueError("SMTP_PASSWORD must be set in production when SMTP_USERNAME is")
        if self.smtp_tls == "none" and not _loopback(self.smtp_host):
            raise ValueError("SMTP_TLS must be starttls or tls in production")
        if self.chat_webhook_url and not self.chat_webhook_url.startswith("https://"):
            raise ValueError("CHAT_WEBHOOK_URL must be https in production")
        hook = self.chat_webhook_url or ""
        if any(s in hook for s in DEV_NOTIFICATION_SECRETS):
            raise ValueError("CHAT_WEBHOOK_URL must be set in production")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
