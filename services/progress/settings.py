"""Settings of the progress service (environment variables, see shared/settings.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import ServiceSettings


class ProgressSettings(ServiceSettings):
    service_name: Literal["progress"] = Field(
        "progress", description="fixed: names the queue and database"
    )
    http_port: int = Field(8005, description="port of the progress API")
    feedback_minimum: int = Field(
        3, ge=3, description="answers a session needs before its facilitator sees any feedback"
    )
