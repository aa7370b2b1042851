"""The report's data-size section: the same figures with 100,000 registrations stored."""

from __future__ import annotations

from typing import Any

ROWS = [
    ("signup_p99_ms", "sign-up POST p99 at 100/s for 60 s (ms)", 1),
    ("signup_drain_s", "queues drained after those sign-ups (s)", 1),
    ("journey_per_s", "journey enrollments/s (as fast as possible)", 2),
    ("journey_p99_ms", "sign-up to confirmed p99, as fast as possible (ms)", 1),
    ("journey_target_p99_ms", "sign-up to confirmed p99 at 20 journeys/s (ms)", 1),
    ("fraction_of_bound", "fraction of the bound", 3),
    ("db_commands", "database commands per enrollment", 1),
    ("cpu_ms", "CPU ms per enrollment, the system's processes", 1),
]


def _mmm(s: dict[str, Any] | None, digits: int) -> str:
    if not s or s.get("median") is None:
        return "–"
    med, lo, hi = (f"{s[k]:,.{digits}f}" for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}–{hi})"


def markdown(summary: dict[str, Any], reps: list[dict[str, Any]]) -> list[str]:
    size = summary.get("data_size") or {}
    sized = [r for r in reps if "data_size" in r]
    lines = [
        "After the seat race, each repetition grows its database to 100,000 registrations",
        "and measures again. The run's own documents are copied (every service's database,",
        "each copy a consistent world with new ids: registrations with their cohorts,",
        "payments, consents, deliveries and progress), because real sign-ups at the system's",
        "own pace would take hours. The copies are finished work: nothing in them is due,",
        "and finished deliveries are copied into notifications' delivery log, where it would",
        "have moved them (copied into its working set, it would archive them during the",
        "next idle baseline, which the net counts take out).",
        "",
    ]
    if not sized:
        return [*lines, "Not measured in this run (`--data-size 0`, or no repetition got here)."]
    pre = size.get("preload", {})
    lines += [
        f"Registrations after growing: {_mmm(pre.get('registrations_after'), 0)};"
        f" documents inserted: {_mmm(pre.get('documents_inserted'), 0)}, in"
        f" {_mmm(pre.get('seconds'), 1)} s.",
        "",
        "| figure | as the run began | with 100,000 registrations |",
        "|---|---|---|",
    ]
    without, with_ = size.get("without", {}), size.get("with", {})
    for key, label, digits in ROWS:
        lines.append(
            f"| {label} | {_mmm(without.get(key), digits)} | {_mmm(with_.get(key), digits)} |"
        )
    places = (
        (sized[0]["data_size"].get("journey") or {}).get("costs", {}).get("db_commands_by_place")
    )
    base = (reps[0].get("journey") or {}).get("costs", {}).get("db_commands_by_place") or {}
    if places:
        lines += [
            "",
            "Database commands per enrollment by place (repetition 1, net), before and with"
            " the grown database:",
            "",
            "| service command collection | as the run began | with 100,000 |",
            "|---|---|---|",
        ]
        for place in sorted(set(places) | set(base), key=lambda k: -places.get(k, 0.0)):
            lines.append(f"| {place} | {base.get(place, 0.0):.2f} | {places.get(place, 0.0):.2f} |")
    return lines
