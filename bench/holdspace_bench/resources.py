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
    """The limit of one phase, judged on its busiest stretch (machine.WINDOW_S) where it
    was measured, else on the phase's average."""
    wall = usage.get("wall_s") or 0.0
    if wall <= 0:
        return {"limit": None, "machine_busy": None, "by_process": {}, "peak": {}}
    busy = usage.get("machine_busy_cpu_s", 0.0) / (wall * cores)
    by_process = {
        name: round(cpu / wall, 3)
        for name, cpu in sorted(usage.get("cpu_s", {}).items(), key=lambda kv: -kv[1])
    }
    peak_busy = usage.get("machine_peak_busy")
    busiest = busy if peak_busy is None else peak_busy
    single = [(share, name) for share, name in service_peaks(usage) if share >= SATURATED]
    machine = f"the machine {busy:.0%} busy" + (
        "" if peak_busy is None else f", {peak_busy:.0%} at its busiest"
    )
    if single:
        share, name = single[0]
        limit = (
            f"one core: the {name} process ({share:.0%} of a core at its busiest, "
            f"{by_process.get(name, 0):.0%} over the phase; {machine})"
        )
    elif busiest >= SATURATED:
        top = ", ".join(f"{n} {s:.0%}" for n, s in list(by_process.items())[:3])
        limit = f"the machine's {cores} cores ({machine}; most: {top} of a core)"
    else:
        limit = f"not CPU ({machine}): waiting, see the traces"
    return {
        "limit": limit,
        "machine_busy": round(busy, 3),
        "machine_peak_busy": peak_busy,
        "by_process": by_process,
        "peak": usage.get("peak_share") or {},
    }


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
        "process's CPU as a share of one core (over the phase / in its busiest 5 s), and",
        "what that makes the limit. A service is one Python process with one event loop: at",
        "85% of a core or more in its busiest 5 s it is the limit (the JVM of the database",
        "and the Erlang VM of the broker can use both cores).",
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
            procs = ", ".join(
                f"{n} {s:.0%}" + (f" / {v['peak'][n]:.0%}" if n in v["peak"] else "")
                for n, s in v["by_process"].items()
                if s >= 0.05
            )
            busy = "–" if v["machine_busy"] is None else f"{v['machine_busy']:.0%}"
            if v.get("machine_peak_busy") is not None:
                busy += f" / {v['machine_peak_busy']:.0%}"
            lines.append(f"| {label}{suffix} | {busy} | {procs} | {v['limit']} |")
    return lines


def limiting_process(reps: list[dict[str, Any]]) -> str | None:
    """The service most phases of repetition 1 name as their one-core limit, if any."""
    if not reps:
        return None
    usages = [*phase_usages(reps[0]).values()]
    if "data_size" in reps[0]:
        usages += phase_usages(reps[0]["data_size"]).values()
    tops = [service_peaks(usage)[:1] for usage in usages]
    named = [name for top in tops for share, name in top if share >= SATURATED]
    return max(set(named), key=named.count) if named else None


def service_peaks(usage: dict[str, Any]) -> list[tuple[float, str]]:
    """(share of one core, name) of each service, busiest first: in its busiest stretch
    where that was measured, else over the phase. The JVM, the Erlang VM and the load
    generator are not services that one core limits."""
    wall = usage.get("wall_s") or 0.0
    peak = usage.get("peak_share") or {
        n: cpu / wall for n, cpu in usage.get("cpu_s", {}).items() if wall > 0
    }
    return sorted(
        (
            (share, name)
            for name, share in peak.items()
            if name not in MULTICORE and name != "load generator (bench)"
        ),
        reverse=True,
    )


def moves(
    name: str,
    summary: dict[str, Any],
    reps: list[dict[str, Any]],
    profile: dict[str, Any] | None,
    *,
    rate: float,
    cores: int,
) -> list[str]:
    """What would move the limit: where the limiting service's CPU goes, measured."""
    cpu = {
        p: u["cpu_ms"]["median"]
        for p, u in summary.get("usage_per_enrollment", {}).items()
        if u["cpu_ms"]["median"] is not None
    }
    total = sum(cpu.values())
    places = ((reps[0].get("journey") or {}).get("costs") or {}).get("db_commands_by_place") or {}
    own = {p: v for p, v in places.items() if p.split(" ", 1)[0] == name}
    lines = ["### What would move it", ""]
    if total > 0:
        need = total * rate / 1000
        verdict = (
            "no placement of the processes meets that rate here"
            if need > cores
            else "the cores would do, if the work were spread over them"
        )
        lines.append(
            f"- At {rate:g} journeys/s the system's {total:,.0f} ms of CPU per enrollment is"
            f" {need:.1f} s of CPU per second, {need / cores:.1f} times this machine's"
            f" {cores} cores: {verdict}. It takes at most {1000 * cores / rate:,.0f} ms per"
            " enrollment in all (less, for the latency targets to hold with headroom), or"
            " more cores."
        )
    if name in cpu and total > 0:
        lines.append(
            f"- **{name}** spends {cpu[name]:,.0f} ms of CPU per enrollment,"
            f" {cpu[name] / total:.0%} of the system's {total:,.0f} ms, and one process of it"
            " has one core: it keeps up"
            f" with at most about {1000 / cpu[name]:,.1f} enrollments/s of its work. Past"
            " that its queues grow, and every step that waits on it (a link sent by email)"
            " waits with them. Its consumers share their queues, so replicas divide the work"
            f" (deploy/kubernetes runs several); on this machine they would compete for the"
            f" same {cores} cores."
        )
    if own:
        top = sorted(own.items(), key=lambda kv: -kv[1])[:4]
        lines.append(
            f"- It sends {sum(own.values()):.0f} of the {sum(places.values()):.0f} database"
            " commands of an enrollment (repetition 1); the most: "
            + ", ".join(f"{p.split(' ', 1)[1]} {v:.1f}" for p, v in top)
            + ". Each costs it a round trip's encoding and decoding: reading a document once"
            " per message instead of once per step moves it."
        )
    summ = ((profile or {}).get("journeys") or {}).get(name) or {}
    if summ.get("samples"):
        libs = ", ".join(f"{x['name']} {x['share']:.0%}" for x in summ["by_library"][:4])
        ours = ", ".join(f"{x['name']} {x['share']:.0%}" for x in summ.get("by_our_code", [])[:4])
        lines.append(
            f"- Its on-CPU samples in the journeys (py-spy): by library {libs}; our code {ours}."
        )
    return lines
