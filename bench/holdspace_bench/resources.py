"""Which resource ran out in a phase, from the CPU each process used during it.

Every service is one Python process with one event loop, so it can use at most one core:
a service near 100% of a core is the limit however idle the rest of the machine is. The
machine as a whole is the limit when its cores are nearly all busy. A phase short of
its target with neither is waiting on something other than CPU (the broker's confirms,
the database's locks, the pacing of the work), and the traces of that phase say where.
"""

from __future__ import annotations

from typing import Any

SATURATED = 0.85
# Processes that can use more than one core (the JVM and the Erlang VM).
MULTICORE = frozenset({"mongo", "rabbitmq"})

PHASES = [
    ("sign-ups at 100/s for 60 s", "target_step"),
    ("journeys as fast as possible", "journey"),
    ("journeys at the target rate", "journey_target"),
]


def verdict(usage: dict[str, Any], cores: int) -> dict[str, Any]:
    wall = usage.get("wall_s") or 0.0
    if wall <= 0:
        return {"limit": None, "machine_busy": None, "by_process": {}}
    busy = usage.get("machine_busy_cpu_s", 0.0) / (wall * cores)
    by_process = {
        name: round(cpu / wall, 3)
        for name, cpu in sorted(usage.get("cpu_s", {}).items(), key=lambda kv: -kv[1])
    }
    single = {
        name: share
        for name, share in by_process.items()
        if name not in MULTICORE and name != "load generator (bench)" and share >= SATURATED
    }
    if single:
        name = next(iter(single))
        limit = f"one core: the {name} process ({single[name]:.0%} of a core)"
    elif busy >= SATURATED:
        top = ", ".join(f"{n} {s:.0%}" for n, s in list(by_process.items())[:3])
        limit = f"the machine's {cores} cores ({busy:.0%} busy; most: {top} of a core)"
    else:
        limit = f"not CPU ({busy:.0%} of the machine busy): waiting, see the traces"
    return {"limit": limit, "machine_busy": round(busy, 3), "by_process": by_process}


def phase_usages(phase: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The usage of each measured phase of a repetition (or of its data-size part)."""
    out: dict[str, dict[str, Any]] = {}
    step = phase.get("signup") or next(
        (
            s
            for s in phase.get("ramp", [])
            if s["offered_per_s"] == 100.0 and s["duration_s"] >= 60.0
        ),
        None,
    )
    parts = {"target_step": step, **{k: phase.get(k) for k in ("journey", "journey_target")}}
    for label, key in PHASES:
        usage = (parts.get(key) or {}).get("usage")
        if usage:
            out[label] = usage
    return out


def markdown(reps: list[dict[str, Any]], cores: int) -> list[str]:
    lines = [
        "For each phase of repetition 1: the share of the machine's CPU in use, each",
        "process's CPU as a share of one core, and what that makes the limit. A service is",
        "one Python process with one event loop: at 85% of a core or more it is the limit",
        "(the JVM of the database and the Erlang VM of the broker can use both cores).",
        "",
    ]
    if not reps:
        return [*lines, "No repetition finished."]
    rep = reps[0]
    rows = [("", phase_usages(rep))]
    if "data_size" in rep:
        rows.append((" (100,000 stored)", phase_usages(rep["data_size"])))
    lines += [
        "| phase | machine busy | processes, share of one core | limit |",
        "|---|---|---|---|",
    ]
    for suffix, usages in rows:
        for label, usage in usages.items():
            v = verdict(usage, cores)
            procs = ", ".join(f"{n} {s:.0%}" for n, s in v["by_process"].items() if s >= 0.05)
            busy = "–" if v["machine_busy"] is None else f"{v['machine_busy']:.0%}"
            lines.append(f"| {label}{suffix} | {busy} | {procs} | {v['limit']} |")
    return lines
