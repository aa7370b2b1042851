"""``ops registration timeline ID``: where one sign-up spent its time, from the spans
the services wrote to their trace files (TRACE_FILE; ``scripts/up`` writes
``var/traces/<service>.jsonl``). The trace viewer for a machine without one: with an
OTLP collector configured, its own viewer shows the same trace.

The registration's trace is found by the registration id, which every event about it
carries as its correlation id (the messaging spans' ``conversation_id``). Spans hold
no personal data (shared/tracing.py), so they are shown whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONVERSATION = "messaging.message.conversation_id"


@dataclass
class Step:
    service: str
    name: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    failed: bool
    children: list[Step] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass
class Timeline:
    trace_id: str
    roots: list[Step]

    def rows(self) -> list[tuple[int, float, Step]]:
        """(depth, ms after the trace began, step), in the order things began."""
        if not self.roots:
            return []
        began = min(step.start_ns for step in self.roots)
        out: list[tuple[int, float, Step]] = []

        def walk(step: Step, depth: int) -> None:
            out.append((depth, (step.start_ns - began) / 1e6, step))
            for child in sorted(step.children, key=lambda s: s.start_ns):
                walk(child, depth + 1)

        for root in sorted(self.roots, key=lambda s: s.start_ns):
            walk(root, 0)
        return out


def nanos(stamp: str) -> int:
    from datetime import datetime

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1e9)


def read_spans(directory: Path) -> list[dict[str, Any]]:
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                spans.append(json.loads(line))
            except ValueError:  # a line a stopped process left half-written
                continue
    return spans


def timeline(spans: list[dict[str, Any]], registration_id: str) -> list[Timeline]:
    """The trace(s) holding the registration's events (one, unless it began before
    tracing did), each as a tree."""
    wanted = {
        s["context"]["trace_id"]
        for s in spans
        if (s.get("attributes") or {}).get(CONVERSATION) == registration_id
    }
    found = []
    for trace_id in sorted(wanted):
        steps = {
            s["context"]["span_id"]: Step(
                service=s["resource"]["attributes"].get("service.name", "?"),
                name=s["name"],
                span_id=s["context"]["span_id"],
                parent_id=s.get("parent_id"),
                start_ns=nanos(s["start_time"]),
                end_ns=nanos(s["end_time"]),
                failed=(s.get("status") or {}).get("status_code") == "ERROR",
            )
            for s in spans
            if s["context"]["trace_id"] == trace_id
        }
        roots = []
        for step in steps.values():
            parent = steps.get(step.parent_id or "")
            (parent.children if parent else roots).append(step)
        found.append(Timeline(trace_id.removeprefix("0x"), roots))
    return found


def render(timelines: list[Timeline]) -> str:
    lines = []
    for one in timelines:
        lines.append(f"trace {one.trace_id}")
        lines.append(f"{'at ms':>10} {'took ms':>9}  service        step")
        for depth, at, step in one.rows():
            mark = "  FAILED" if step.failed else ""
            lines.append(
                f"{at:>10.1f} {step.ms:>9.1f}  {step.service:<14} {'  ' * depth}{step.name}{mark}"
            )
    return "\n".join(lines)
