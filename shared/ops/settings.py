"""What the ``ops`` tool reads from the environment (one variable per field).

The same variables as the services (shared/settings.py), so an operator runs the tool
with a service's environment; plus where each service's HTTP API answers. The retry
settings shape the retry queues' names, so they must match the services'.
"""

from __future__ import annotations

from pydantic import Field

from shared.messaging import Topology
from shared.settings import CommonSettings, ServiceSettings
from shared.topology import SERVICES

DEFAULT_PORTS = {
    "registration": 8001,
    "consent": 8002,
    "payments": 8003,
    "notifications": 8004,
    "progress": 8005,
}

_service_fields = ServiceSettings.model_fields


class OpsSettings(CommonSettings):
    """CommonSettings plus the services' retry shape and their URLs."""

    max_attempts: int = Field(
        _service_fields["max_attempts"].default,
        ge=1,
        description="as the services' MAX_ATTEMPTS: names the retry queues",
    )
    retry_base_ms: int = Field(
        _service_fields["retry_base_ms"].default, description="as the services' RETRY_BASE_MS"
    )
    retry_max_ms: int = Field(
        _service_fields["retry_max_ms"].default, description="as the services' RETRY_MAX_MS"
    )
    registration_url: str = Field(
        "http://127.0.0.1:8001", description="base URL of the registration service"
    )
    consent_url: str = Field("http://127.0.0.1:8002", description="base URL of consent")
    payments_url: str = Field("http://127.0.0.1:8003", description="base URL of payments")
    notifications_url: str = Field("http://127.0.0.1:8004", description="base URL of notifications")
    progress_url: str = Field("http://127.0.0.1:8005", description="base URL of progress")
    ops_timeout_s: float = Field(
        5.0, gt=0, description="timeout of each HTTP call and broker operation of the tool"
    )

    def retry_delays_ms(self) -> list[int]:
        # The services' own formula, so the names can never drift apart.
        return ServiceSettings.retry_delays_ms(self)  # type: ignore[arg-type]

    def topology(self, service: str) -> Topology:
        return Topology(self.holdspace_topology_prefix, service, tuple(self.retry_delays_ms()))

    def database_name(self, service: str) -> str:
        return f"{self.holdspace_db_prefix}{service}"

    def service_url(self, service: str) -> str:
        return str(getattr(self, f"{service}_url")).rstrip("/")

    def resolve_dlq(self, name: str) -> tuple[str, str | None]:
        """A service name, ``<service>.dlq`` or a full queue name -> (queue, service or None)."""
        prefix = self.holdspace_topology_prefix
        for service in SERVICES:
            dlq = self.topology(service).dlq
            if name in (service, f"{service}.dlq", dlq):
                return dlq, service
        if name.endswith(".dlq"):
            service = name.removeprefix(prefix).removesuffix(".dlq")
            return name, service if service in SERVICES else None
        raise ValueError(
            f"{name!r} is not a dead-letter queue: give a service ({', '.join(SERVICES)}),"
            " '<service>.dlq' or a queue name ending in '.dlq'"
        )
