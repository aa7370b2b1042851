"""Reading the spans the services of a test system wrote (TRACE_FILE, JSON lines)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.ops import spans as stored

# The batch processor's wait before an export (the SDK reads it from the environment).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


@dataclass(frozen=True)
class Span:
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def service(self) -> str:
        return self.raw["resource"]["attributes"]["service.name"]

    @property
    def trace_id(self) -> str:
        return self.raw["context"]["trace_id"].removeprefix("0x")

    @property
    def span_id(self) -> str:
        return self.raw["context"]["span_id"].removeprefix("0x")

    @property
    def parent_id(self) -> str | None:
        parent = self.raw.get("parent_id")
        return parent.removeprefix("0x") if parent else None

    @property
    def attributes(self) -> dict[str, Any]:
        return self.raw.get("attributes") or {}

    @property
    def linked_traces(self) -> set[str]:
        links = self.raw.get("links") or []
        return {link["context"]["trace_id"].removeprefix("0x") for link in links}


def read_spans(directory: Path) -> list[Span]:
    return [Span(raw) for raw in stored.read_spans(directory)]
