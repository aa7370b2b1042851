"""Settings shared by every service, read from the environment (pydantic-settings).

Every field is one environment variable, named in upper case (``rabbitmq_url`` is
``RABBITMQ_URL``); a service's own settings subclass :class:`ServiceSettings` and
add fields named for what they are (``smtp_host`` is ``SMTP_HOST``). In production
(``HOLDSPACE_ENV=production``) every secret must be set explicitly: the
development defaults below refuse to start there. HOLDSPACE_ENV has no default:
a process that is not told which it is refuses to start, so a deployment that
forgot it does not quietly run on the public development secrets.
"""

from __future__ import annotations

import base64
import os
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only secrets. Known values, so they are refused in production.
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_ENCRYPTION_KEY = base64.b64encode(b"dev-only-aes-key-32-bytes-long!!").decode()
DEV_BLIND_INDEX_KEY = base64.b64encode(b"dev-only-blind-index-key-32bytes").decode()
DEV_SECRETS = {DEV_JWT_SECRET, DEV_ENCRYPTION_KEY, DEV_BLIND_INDEX_KEY}


class Environment(StrEnum):
    development = "development"
    production = "production"


MISSING_ENV = (
    "HOLDSPACE_ENV is not set: set HOLDSPACE_ENV=production for a deployment (every secret"
    " then given), or HOLDSPACE_ENV=development to run on the public development secrets"
)


MIN_JWT_SECRET_BYTES = 32


class CommonSettings(BaseSettings):
    """What every service and the ops tool read."""

    # hide_input_in_errors: a refusal names the variable, never prints the secrets given.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    holdspace_env: Environment = Field(
        None,  # type: ignore[assignment]  # refused below: the variable is required
        validate_default=True,
        description="development or production; required (the development secrets are"
        " accepted only with development)",
    )
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/?heartbeat=15", description="AMQP URL of the broker"
    )
    rabbitmq_management_url: str | None = Field(
        None, description="RabbitMQ management HTTP API base URL, when enabled"
    )
    mongodb_url: str = Field("mongodb://127.0.0.1:27017/", description="MongoDB-wire URL")
    holdspace_topology_prefix: str = Field(
        "holdspace.", description="prefix of every exchange and queue name"
    )
    holdspace_db_prefix: str = Field(
        "holdspace_", description="prefix of every service's database name"
    )
    log_level: str = Field("INFO", description="log level")
    log_format: str = Field("auto", description="json, console or auto (json in production)")
    jwt_secret: str = Field(
        DEV_JWT_SECRET, description="HS256 key for coordinator tokens (32 bytes or more)"
    )
    jwt_ttl_seconds: int = Field(
        3600, description="lifetime of minted tokens (12 h at most)", ge=1, le=12 * 3600
    )

    @property
    def is_production(self) -> bool:
        return self.holdspace_env == Environment.production

    @property
    def is_development(self) -> bool:
        return self.holdspace_env == Environment.development

    @field_validator("holdspace_env", mode="before")
    @classmethod
    def _require_an_environment(cls, value: object) -> object:
        # A field validator, so the error shows this value, never the other settings.
        if value is None or not str(value).strip():
            raise ValueError(MISSING_ENV)
        return value

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> CommonSettings:
        if self.is_development:
            return self
        for name, value in self.model_dump().items():
            if isinstance(value, str) and value in DEV_SECRETS:
                raise ValueError(f"{name.upper()} must be set in production")
        if "guest:guest@" in self.rabbitmq_url:
            raise ValueError("RABBITMQ_URL must not use the guest account in production")
        if len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            # Anyone who guesses it mints coordinator tokens; RFC 7518 §3.2 asks HS256 for
            # a key of at least its hash's size.
            raise ValueError(
                f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes in production"
                " (openssl rand -base64 48)"
            )
        return self


class ServiceSettings(CommonSettings):
    """What a running service reads in addition to the common settings."""

    service_name: str = Field("service", description="set by each service")
    http_host: str = Field("127.0.0.1", description="interface the HTTP API listens on")
    http_port: int = Field(8000, description="port the HTTP API listens on (per service)")
    prefetch: int = Field(32, description="unacknowledged deliveries per consumer", ge=1)
    max_attempts: int = Field(
        5, description="handler attempts before a message is dead-lettered", ge=1
    )
    retry_base_ms: int = Field(200, description="first retry delay; doubles each attempt")
    retry_max_ms: int = Field(30_000, description="longest retry delay")
    handler_timeout_s: float = Field(30.0, description="a handler taking longer fails")
    database_timeout_s: float = Field(
        10.0,
        description="how long one database operation may wait for the database's answer;"
        " past it (or with the database unreachable) an API request answers 503 with"
        " Retry-After, and a consumer waits for the database without spending attempts",
        gt=0,
    )
    publish_timeout_s: float = Field(10.0, description="publisher confirm timeout")
    outbox_poll_s: float = Field(
        10.0,
        description="how often the relay looks for events a dead process left unpublished"
        " (a write wakes it at once)",
    )
    outbox_claim_s: float = Field(
        15.0, description="how long a relay's claim on an aggregate's outbox lasts if it dies"
    )
    jobs_poll_s: float = Field(
        5.0, description="how often due work (expiries, reminders, retries) is looked for"
    )
    due_claim_s: float = Field(
        60.0, description="how long a claim on a due item lasts if its runner dies"
    )
    encryption_key: str = Field(DEV_ENCRYPTION_KEY, description="base64 AES-256 key")
    encryption_key_id: str = Field("dev1", description="id of ENCRYPTION_KEY, stored per value")
    encryption_retired_keys: str = Field(
        "",
        description=(
            "keys replaced by ENCRYPTION_KEY, still read (never written): "
            "'<id>:<base64 key>' comma-separated"
        ),
    )
    blind_index_key: str = Field(DEV_BLIND_INDEX_KEY, description="base64 HMAC key for lookups")
    public_base_url: str = Field(
        "http://127.0.0.1:8001", description="base URL applicants' links point to"
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL (e.g. http://jaeger:4318); spans are"
        " exported there when set (shared/tracing.py)",
    )
    trace_file: str | None = Field(
        None,
        description="a file to append every finished span to, as JSON lines;"
        " {service} in it is the service's name",
    )
    trace_sample_ratio: float = Field(
        1.0, description="share of new traces recorded (a traced caller's choice wins)", ge=0, le=1
    )
    max_body_bytes: int = Field(64 * 1024, description="largest accepted request body")
    max_image_bytes: int = Field(
        512 * 1024, description="largest accepted image/* body (an uploaded QR code)"
    )
    http_max_in_flight: int = Field(
        64,
        description="requests one process works on at once (shared/admission.py); the"
        " probes and /metrics are not counted",
        ge=1,
    )
    http_max_waiting: int = Field(
        64,
        description="requests that may wait for one of those slots; any more are answered"
        " 503 with Retry-After at once",
        ge=0,
    )
    http_admission_wait_ms: int = Field(
        200,
        description="how long a waiting request waits for a slot before it is answered 503"
        " with Retry-After",
        ge=0,
    )

    @property
    def database_name(self) -> str:
        return f"{self.holdspace_db_prefix}{self.service_name}"

    def retry_delays_ms(self) -> list[int]:
        """Delay before attempt 2, 3, ... max_attempts."""
        return [
            min(self.retry_base_ms * 2**i, self.retry_max_ms) for i in range(self.max_attempts - 1)
        ]


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (for docs and compose checks)."""
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return {f"{prefix}{name}".upper() for name in settings_cls.model_fields}


S = TypeVar("S", bound=BaseSettings)


def running_system_env() -> Path | None:
    """The environment file ``scripts/up`` writes for its run (``$VAR_DIR/run/up.env``,
    ``var/`` by default, from where the command runs), when there is one."""
    path = Path(os.environ.get("VAR_DIR") or "var") / "run" / "up.env"
    return path if path.is_file() else None


def for_running_system(cls: type[S]) -> S:
    """Settings for an operator's command: its environment first, then what the
    running ``scripts/up`` uses, so ``ops`` finds that system's database and ports."""
    return cls(_env_file=running_system_env())  # type: ignore[call-arg]
