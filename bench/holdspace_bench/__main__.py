"""``bench/run``: the benchmark of issue 8. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from holdspace_bench import machine, peer, report, stats
from holdspace_bench.runner import SEATS, Config, profile_pass, repetition
from holdspace_bench.system import MANAGEMENT_AUTH, MANAGEMENT_URL
from shared import devinfra

REPO = devinfra.REPO_ROOT


def parse(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="seconds, tiny N: checks the script works")
    p.add_argument("--reps", type=int, help="repetitions (at least 3 for a real run)")
    p.add_argument("--rates", help="comma-separated sign-up rates of the ramp, per second")
    p.add_argument("--step-s", type=float, help="seconds per ramp step (the target rate: 60)")
    p.add_argument(
        "--target-s",
        type=float,
        help="seconds at the target rate (100/s); under 60 the targets are not judged",
    )
    p.add_argument("--profile-s", type=float, help="seconds of sign-ups in the profile pass")
    p.add_argument("--journey-n", type=int, help="applicants in the as-fast-as-possible journey")
    p.add_argument("--journey-concurrency", type=int, help="journeys in flight at once")
    p.add_argument("--race-n", type=int, help="concurrent sign-ups for the 8-seat cohort")
    p.add_argument("--raw-s", type=float, help="seconds per raw-limit measurement")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy pass")
    p.add_argument("--profile", action="store_true", help="profile even if every target passed")
    p.add_argument(
        "--data-size",
        type=int,
        help="registrations the database is grown to for the data-size phase (0 skips it)",
    )
    p.add_argument("--no-peer", action="store_true", help="skip the peer (pretix)")
    p.add_argument("--peer", action="store_true", help="measure the peer even in a quick run")
    p.add_argument("--out", type=Path, help="directory for the results (default bench/results)")
    p.add_argument("--work", type=Path, help="scratch directory (default var/bench/work)")
    args = p.parse_args(argv)
    cfg = Config.quick_config() if args.quick else Config()
    if args.reps is not None:
        cfg.reps = args.reps
    if args.rates:
        cfg.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    names = ("step_s", "target_s", "profile_s", "journey_n", "journey_concurrency", "race_n")
    for name in (*names, "raw_s"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    if args.no_profile:
        cfg.profile = False
    if args.data_size is not None:
        cfg.data_size = args.data_size
    if args.no_peer:
        cfg.peer = False
    if args.peer:
        cfg.peer = True
    return cfg, args


async def servers() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{MANAGEMENT_URL}/api/overview", auth=MANAGEMENT_AUTH) as r:
                overview = await r.json()
        out["rabbitmq"] = overview.get("rabbitmq_version", "?")
        out["erlang"] = overview.get("erlang_version", "?")
    except (aiohttp.ClientError, OSError, ValueError):
        out["rabbitmq"] = "management API unreachable"
    return out


def database_version() -> str:
    """The server and its store, named by the artifacts scripts/ensure-mongo built."""
    if os.environ.get("MONGODB_URL"):
        return "the server at MONGODB_URL"
    lib = Path(devinfra.embedded_mongo_jar()).parent / "lib"

    def version(artifact: str) -> str:
        found = sorted(lib.glob(f"{artifact}-[0-9]*.jar"))
        return found[-1].stem.removeprefix(f"{artifact}-") if found else "?"

    return (
        f"mongo-java-server {version('mongo-java-server-core')}"
        " (deploy/embedded-mongo launcher), in memory with a journal:"
        " every write appended to it before it is acknowledged"
    )


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


async def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    started = time.monotonic()
    load_before = machine.loadavg()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out_dir = args.out or (REPO / ("var/bench" if cfg.quick else "bench/results"))
    work = args.work or (REPO / "var" / "bench" / "work")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{date}-quick" if cfg.quick else date
    log(f"bench: {cfg.reps} repetition(s), load average {load_before}; results in {out_dir}")
    if load_before[0] > 0.25 * (machine.psutil.cpu_count() or 1):
        log("bench: WARNING: the machine is busy; the figures will be polluted")
    pretix = None
    if cfg.peer:
        log("bench: the peer, pretix, on the same machine")
        pretix = await peer.pretix_peer(
            work / "peer",
            rates=cfg.peer_rates,
            step_s=cfg.peer_step_s,
            race_n=cfg.race_n,
            seats=SEATS,
            log=log,
        )
    reps: list[dict[str, Any]] = []
    partial = out_dir / f"{stem}.partial.json"

    async def assemble() -> dict[str, Any]:
        result: dict[str, Any] = {
            "date": date,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": cfg.quick,
            "command": shlex.join(["bench/run", *(argv if argv is not None else sys.argv[1:])]),
            "config": cfg.__dict__,
            "machine": machine.describe(REPO),
            "servers": {**await servers(), "database": await asyncio.to_thread(database_version)},
            "repetitions": reps,
        }
        if pretix is not None:
            result["peer"] = pretix
        result["summary"] = report.summarize(reps)
        quiet, warnings = stats.quiet_verdict(
            load_before=load_before[0],
            cores=result["machine"]["logical_cores"] or 1,
            foreign_cpu_share=result["summary"]["foreign_cpu_share_max"],
        )
        result["quiet"] = {
            "quiet": quiet,
            "warnings": warnings,
            "load_before": load_before,
            "load_after": machine.loadavg(),
            "foreign_cpu_share_max": result["summary"]["foreign_cpu_share_max"],
        }
        result["targets"] = [t.__dict__ for t in report.targets(reps, quick=cfg.quick)]
        result["duration_s"] = round(time.monotonic() - started, 1)
        return result

    for k in range(1, cfg.reps + 1):
        reps.append(await repetition(cfg, k, work, log))
        # What is done so far, should the run be stopped before its end: `python -m
        # holdspace_bench.report <file>` renders a report of it, marked as partial.
        report.write_json(partial, {**await assemble(), "partial": True})
    result = await assemble()
    judged = report.targets(reps, quick=cfg.quick)
    missed = any(t.passed is False for t in judged)
    if not cfg.quick and (args.profile or (cfg.profile and missed)):
        log("bench: profiling with py-spy" + (" (a target was missed)" if missed else ""))
        result["profile"] = await profile_pass(cfg, work, log)
        result["quiet"]["load_after"] = machine.loadavg()
    result["duration_s"] = round(time.monotonic() - started, 1)
    quiet = result["quiet"]["quiet"]
    warnings = result["quiet"]["warnings"]
    images = report.plots(result, out_dir, stem)
    report.write_json(out_dir / f"{stem}.json", result)
    partial.unlink(missing_ok=True)
    (out_dir / f"{stem}.md").write_text(report.markdown(result, images))
    failed = [r["index"] for r in reps if "error" in r]
    if not failed:
        shutil.rmtree(work, ignore_errors=True)  # logs are kept when something failed
    log(f"bench: wrote {out_dir / (stem + '.md')}, {stem}.json, {', '.join(images)}")
    for t in judged:
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[t.passed]
        log(f"  {verdict:>12}  {t.text}")
    if not quiet:
        log("bench: WARNING: the machine was not quiet: " + "; ".join(warnings))
    if failed:
        log(f"bench: repetition(s) {failed} did not finish; see the JSON and {work}")
        return 1
    return 0


async def _main_cancelled_by_sigterm() -> int:
    """SIGTERM stops the run like Ctrl-C does: every repetition's ``finally`` stops the
    processes it started (a killed benchmark would leave the database and the services)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await main()


if __name__ == "__main__":
    sys.exit(asyncio.run(_main_cancelled_by_sigterm()))
