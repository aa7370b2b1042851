"""Where the services' time went, from the spans they wrote (TRACE_FILE) in a repetition:
per step (service and span name), how many, how long each took and the time in all."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from holdspace_bench import stats
from shared.ops.spans import nanos, read_spans

TOP = 15


def summarize(directory: Path, top: int = TOP) -> list[dict[str, Any]]:
    took: dict[tuple[str, str], list[float]] = defaultdict(list)
    for span in read_spans(directory):
        service = (span.get("resource") or {}).get("attributes", {}).get("service.name", "?")
        seconds = (nanos(span["end_time"]) - nanos(span["start_time"])) / 1e9
        took[(service, span["name"])].append(seconds)
    rows = [
        {
            "service": service,
            "step": name,
            "count": len(values),
            "p50_ms": _ms(stats.percentile(values, 50)),
            "p99_ms": _ms(stats.percentile(values, 99)),
            "total_s": round(sum(values), 1),
        }
        for (service, name), values in took.items()
    ]
    return sorted(rows, key=lambda r: -r["total_s"])[:top]


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "From the spans the services wrote during repetition 1 (all its phases), the steps",
        "that took the most time in all. A span's time includes its children's and any wait",
        "(a consumer span waits on the database; a request span on everything it calls).",
        "",
    ]
    if not rows:
        return [*lines, "No spans were written in this run."]
    lines += ["| service | step | count | p50 ms | p99 ms | total s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['service']} | {r['step']} | {r['count']:,} | {r['p50_ms']} | {r['p99_ms']}"
            f" | {r['total_s']:,} |"
        )
    return lines


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
