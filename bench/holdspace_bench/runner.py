"""One benchmark run: every repetition on a fresh system, then the optional profile pass.

A repetition: start the broker vhost and the database, measure the raw limits, start
the services, drive the sign-up ramp, the journey as fast as it goes (its costs counted
from the services' own counters, database commands included), the journey at the target
rate, and the seat race; then stop everything it started.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from holdspace_bench import (
    journey,
    load,
    machine,
    payloads,
    preload,
    profile,
    race,
    raw,
    spans,
    stats,
)
from holdspace_bench.system import System, dead_letters, totals, wait_drained
from shared.topology import SERVICES

SEATS = 8


@dataclass
class Config:
    quick: bool = False
    reps: int = 3
    raw_s: float = 5.0
    broker_messages: int = 20_000
    rates: list[float] = field(default_factory=lambda: [25, 50, 100, 150, 200, 300])
    step_s: float = 20.0
    target_rate: float = 100.0
    target_s: float = 60.0
    journey_rate: float = 20.0  # journeys started per second in the journey's target phase
    per_cohort: int = 20
    journey_n: int = 400
    journey_concurrency: int = 100
    journey_target: bool = True
    race_n: int = 1000
    drain_timeout_s: float = 120.0
    event_timeout_s: float = 120.0
    # Empty queues count only when every reading for this long says so: the management
    # API refreshes its statistics every 5 s.
    stable_s: float = 6.0
    # Journeys at the target rate not confirmed this long after the last one started are
    # given up (counted as failed): a system far below the rate would otherwise take hours.
    journey_grace_s: float = 120.0
    # Seconds of nothing driven before the journey, to take the pollers' background out.
    idle_s: float = 10.0
    profile: bool = True
    profile_s: float = 30.0
    # The data-size phase: the database grown to this many registrations (0: skipped),
    # then the journey and the target-rate sign-ups measured again.
    data_size: int = preload.TARGET_REGISTRATIONS
    # The embedded MongoDB keeps its data in the heap: about 480 MB per 100,000 small
    # documents, and the grown database holds over a million.
    mongo_heap: str = "10g"
    # The peer (pretix) after the repetitions, at these order rates.
    peer: bool = True
    peer_rates: list[float] = field(default_factory=lambda: [5, 10, 25, 50, 100])
    peer_step_s: float = 20.0

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            reps=1,
            raw_s=0.3,
            broker_messages=300,
            rates=[5, 10],
            step_s=2.0,
            target_s=2.0,
            per_cohort=20,
            journey_n=6,
            journey_concurrency=3,
            race_n=60,
            drain_timeout_s=45.0,
            event_timeout_s=45.0,
            stable_s=1.0,
            idle_s=1.0,
            profile=False,
            data_size=1_000,
            mongo_heap="1g",
            peer=False,  # --peer measures it (migrating pretix alone takes over a minute)
            peer_rates=[5, 10],
            peer_step_s=2.0,
        )

    def duration_of(self, rate: float) -> float:
        return self.target_s if rate == self.target_rate else self.step_s


async def _cohorts_for(
    system: System, session: aiohttp.ClientSession, program_id: str, n: int, label: str, per: int
) -> list[str]:
    return await load.create_cohorts(
        system, session, program_id, load.cohorts_needed(n, per), label=label
    )


def _track_all(meter: machine.ProcessMeter, system: System) -> None:
    for name, pid in system.pids().items():
        meter.track(name, pid)
    meter.track("rabbitmq", machine.find_broker_pid())
    meter.track("load generator (bench)", os.getpid())


async def ramp(
    cfg: Config, system: System, session: aiohttp.ClientSession, program_id: str, meter, log
) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    rates = sorted(set(cfg.rates) | {cfg.target_rate}) if not cfg.quick else list(cfg.rates)
    skip_to_target = False
    for rate in rates:
        if skip_to_target and rate != cfg.target_rate:
            continue
        if steps and not steps[-1]["drained"]:
            await settle(cfg, system, session, log)
        step = await ramp_step(cfg, system, session, program_id, meter, log, rate)
        steps.append(step)
        if rate >= cfg.target_rate and not step["kept_up"]:
            break  # at or above the target rate: the first step not kept up ends the ramp
        if not step["drained"] and rate < cfg.target_rate:
            log("    queues did not drain: on to the target rate, then the ramp stops")
            skip_to_target = True
    return steps


async def ramp_step(
    cfg: Config,
    system: System,
    session: aiohttp.ClientSession,
    program_id: str,
    meter,
    log,
    rate: float,
) -> dict[str, Any]:
    """Sign-ups at ``rate`` for the step's duration, then the wait for the queues."""
    duration = cfg.duration_of(rate)
    n = int(round(rate * duration))
    cohorts = await _cohorts_for(system, session, program_id, n, f"r{rate:g}", cfg.per_cohort)
    log(f"  sign-ups at {rate:g}/s for {duration:g} s ({n}, {len(cohorts)} cohorts)")
    meter.start_phase()
    step = await load.sign_up_step(
        system,
        session,
        cohorts,
        rate_per_s=rate,
        duration_s=duration,
        tag=f"ramp{rate:g}-{secrets.token_hex(3)}",
        drain_timeout_s=cfg.drain_timeout_s,
        stable_s=cfg.stable_s,
    )
    step["usage"] = (await meter.end_phase()).to_dict()
    lat = step["latency"]
    log(
        f"    p50 {lat['p50_ms']} p99 {lat['p99_ms']} max {lat['max_ms']} ms,"
        f" errors {step['errors']}, drained {step['drained']} ({step['drain_s']} s): "
        f"{step['why']}"
    )
    return step


async def settle(cfg: Config, system: System, session: aiohttp.ClientSession, log) -> bool:
    """Wait for what an earlier phase left in the queues, so a phase starts from rest."""
    drained, _, queues = await wait_drained(
        system,
        session,
        timeout_s=cfg.drain_timeout_s,
        since=time.monotonic(),
        stable_s=cfg.stable_s,
    )
    if not drained:
        busy = [q["name"] for q in queues if q.get("messages")]
        log(f"  WARNING: starting with a backlog in {busy}: this phase's figures include it")
    return drained


async def snapshot(system: System, session: aiohttp.ClientSession) -> dict[str, Any]:
    return {
        "services": await system.service_counters(session),
        "db": await system.db_commands(session),
        "db_places": await system.db_commands_by_place(session),
    }


def phase_delta(
    before: dict[str, Any],
    after: dict[str, Any],
    idle: dict[str, Any] | None = None,
    wall_s: float = 0.0,
) -> dict[str, Any]:
    """Counter increase over a phase; with ``idle`` (increase per second while nothing is
    driven: pollers, relays), that background is taken out (never below zero)."""

    def net(b: dict[str, float] | None, a: dict[str, float] | None, i: dict[str, float] | None):
        if b is None or a is None:
            return None
        d = stats.counter_delta(b, a)
        if i:
            d = {k: max(0.0, v - i.get(k, 0.0) * wall_s) for k, v in d.items()}
        return d

    return {
        "services": net(before["services"], after["services"], idle and idle["services"]),
        "db": net(before["db"], after["db"], idle and idle["db"]),
        "db_places": net(
            before.get("db_places"), after.get("db_places"), idle and idle.get("db_places")
        ),
    }


def per_second(delta: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        part: None if values is None else {k: v / seconds for k, v in values.items()}
        for part, values in delta.items()
    }


def costs_per_enrollment(delta: dict[str, Any], confirmed: int) -> dict[str, Any]:
    services = delta["services"]
    per = max(confirmed, 1)

    def of(service: str, key: str) -> float:
        return totals({k: v for k, v in services.items() if k.startswith(f"{service}|")}, key)

    out: dict[str, Any] = {
        "confirmed": confirmed,
        "http_requests": totals(services, "http") / per,
        "events_published": totals(services, "published") / per,
        "deliveries_consumed": totals(services, "consumed") / per,
        "retried": totals(services, "retried") / per,
        "dead_lettered": totals(services, "dead_lettered") / per,
        "db_writes_counted_by_services": totals(services, "db_writes") / per,
        "http_by_route": {
            k.split("|", 2)[0] + " " + k.split("|", 2)[2]: round(v / per, 3)
            for k, v in services.items()
            if k.count("|") == 2 and k.split("|", 2)[1] == "http" and v
        },
        "published_by_service": {s: round(of(s, "published") / per, 3) for s in SERVICES},
        "consumed_by_service": {s: round(of(s, "consumed") / per, 3) for s in SERVICES},
    }
    db = delta["db"]
    out["db_commands"] = (
        None if db is None else {k: round(v / per, 3) for k, v in sorted(db.items()) if v}
    )
    places = delta.get("db_places")
    out["db_commands_by_place"] = (
        None
        if places is None
        else {
            k: round(v / per, 3)
            for k, v in sorted(places.items(), key=lambda kv: -kv[1])
            if v / per >= 0.05
        }
    )
    return out


def bound_for(costs: dict[str, Any], raw_limits: dict[str, Any]) -> stats.Bound:
    broker, database, http = raw_limits["broker"], raw_limits["database"], raw_limits["http"]
    items = [
        stats.Cost(
            "HTTP requests",
            costs["http_requests"],
            http["noop_requests_per_s"],
            "services' holdspace_http_requests_total",
        ),
        stats.Cost(
            "messages published",
            costs["events_published"],
            broker["publish_batched_per_s"],
            "services' holdspace_events_published_total",
        ),
        stats.Cost(
            "deliveries consumed",
            costs["deliveries_consumed"],
            broker["consume_per_s"],
            "services' holdspace_events_consumed_total",
        ),
    ]
    db = costs.get("db_commands")
    if db:
        source = "services' holdspace_db_commands_total"
        # A findAndModify is one conditional update of one document, as an update is.
        updates = db.get("update", 0.0) + db.get("findAndModify", 0.0)
        items += [
            stats.Cost("db inserts", db.get("insert", 0.0), database["insert_per_s"], source),
            stats.Cost("db updates", updates, database["conditional_update_per_s"], source),
            stats.Cost("db deletes", db.get("delete", 0.0), database["delete_by_id_per_s"], source),
            stats.Cost(
                "db finds",
                db.get("find", 0.0) + db.get("getMore", 0.0),
                database["find_by_id_per_s"],
                source,
            ),
        ]
    else:
        items.append(
            stats.Cost(
                "db writes",
                costs["db_writes_counted_by_services"],
                database["insert_per_s"],
                "services' holdspace_db_writes_total",
            )
        )
    return stats.bound(items)


def bound_dict(b: stats.Bound) -> dict[str, Any]:
    return {
        "costs": [
            {**asdict(c), "machine_ms": None if c.seconds is None else round(c.seconds * 1000, 4)}
            for c in b.costs
        ],
        "additive_per_s": None if b.additive_per_s is None else round(b.additive_per_s, 2),
        "tightest_alone_per_s": None
        if b.tightest_alone_per_s is None
        else round(b.tightest_alone_per_s, 2),
        "tightest": b.tightest,
        "missing": b.missing,
    }


async def journey_phase(
    cfg: Config, system: System, session, driver, program_id: str, meter, log
) -> dict[str, Any]:
    n = cfg.journey_n
    cohorts = await _cohorts_for(system, session, program_id, n, "journey", SEATS)
    log(
        f"  idle baseline for {cfg.idle_s:g} s, then journeys as fast as possible: {n},"
        f" {cfg.journey_concurrency} at a time"
    )
    from_rest = await settle(cfg, system, session, log)
    idle_before = await snapshot(system, session)
    meter.start_phase()
    await asyncio.sleep(cfg.idle_s)
    idle_usage = await meter.end_phase()
    before = await snapshot(system, session)
    idle = per_second(phase_delta(idle_before, before), idle_usage.wall_s)
    phase_started = time.monotonic()
    meter.start_phase()
    done, started, ended = await journey.as_fast_as_possible(
        driver, cohorts, n=n, concurrency=cfg.journey_concurrency, tag=f"j{secrets.token_hex(3)}"
    )
    drained, drain_s, queues = await wait_drained(
        system, session, timeout_s=cfg.drain_timeout_s, since=ended, stable_s=cfg.stable_s
    )
    usage = await meter.end_phase()
    after = await snapshot(system, session)
    phase_wall = time.monotonic() - phase_started
    confirmed = len(done.latencies)
    last = max(done.completions) if done.completions else ended
    wall = max(1e-9, last - started)
    per = max(confirmed, 1)
    idle_cpu = {k: v / max(idle_usage.wall_s, 1e-9) for k, v in idle_usage.cpu_s.items()}
    summary = done.summary()
    summary.update(
        {
            "wall_s": round(wall, 2),
            "enrollments_per_s": round(confirmed / wall, 2),
            "steady_enrollments_per_s": _round(stats.steady_rate(done.completions)),
            "per_second": stats.per_second(done.completions, started),
            "drained": drained,
            "drain_s": None if drain_s is None else round(drain_s, 1),
            "dead_letters": dead_letters(queues),
            "counted_over_s": round(phase_wall, 2),
            "started_from_rest": from_rest,
            "cohorts": len(cohorts),
            "idle_baseline_s": round(idle_usage.wall_s, 2),
            # Net: the idle background (pollers) over the same time taken out; the bound
            # uses these. Gross: everything counted during the phase.
            "costs": costs_per_enrollment(phase_delta(before, after, idle, phase_wall), confirmed),
            "costs_gross": costs_per_enrollment(phase_delta(before, after), confirmed),
            "usage": usage.to_dict(),
            "idle_cpu_share": {k: round(v, 4) for k, v in idle_cpu.items()},
            "usage_per_enrollment": {
                "cpu_ms": {k: round(v * 1000 / per, 3) for k, v in usage.cpu_s.items()},
                "cpu_ms_net": {
                    k: round(max(0.0, v - idle_cpu.get(k, 0.0) * usage.wall_s) * 1000 / per, 3)
                    for k, v in usage.cpu_s.items()
                },
                "peak_rss_mib": {k: round(v, 1) for k, v in usage.peak_rss_mib.items()},
            },
        }
    )
    lat = summary["latency"]
    log(
        f"    {confirmed}/{n} confirmed, {summary['enrollments_per_s']}/s,"
        f" p50 {lat['p50_ms']} p99 {lat['p99_ms']} ms, failures {summary['failures']}"
    )
    return summary


async def journey_at_target(
    cfg: Config, system: System, session, driver, program_id: str, meter, log
) -> dict[str, Any]:
    rate, duration = cfg.journey_rate, cfg.target_s
    if cfg.quick:
        rate = max(1.0, min(cfg.rates))
    n = int(round(rate * duration))
    cohorts = await _cohorts_for(system, session, program_id, n, "jt", SEATS)
    log(f"  journeys started at {rate:g}/s for {duration:g} s ({n})")
    from_rest = await settle(cfg, system, session, log)
    meter.start_phase()
    done, started, extra = await journey.at_rate(
        driver,
        cohorts,
        rate_per_s=rate,
        duration_s=duration,
        tag=f"jt{secrets.token_hex(3)}",
        grace_s=cfg.journey_grace_s,
    )
    drained, drain_s, _ = await wait_drained(
        system,
        session,
        timeout_s=cfg.drain_timeout_s,
        since=time.monotonic(),
        stable_s=cfg.stable_s,
    )
    usage = await meter.end_phase()
    summary = done.summary()
    summary.update(extra)
    summary.update(
        {
            "offered_per_s": rate,
            "duration_s": duration,
            "started_from_rest": from_rest,
            "cohorts": len(cohorts),
            "per_second": stats.per_second(done.completions, started),
            "drained": drained,
            "usage": usage.to_dict(),
        }
    )
    lat = summary["latency"]
    log(f"    p50 {lat['p50_ms']} p99 {lat['p99_ms']} ms, failures {summary['failures']}")
    return summary


async def repetition(cfg: Config, index: int, work: Path, log) -> dict[str, Any]:
    wechat = payloads.WechatPay()
    system = System(work / f"rep{index}", extra_env=wechat.env(), mongo_heap=cfg.mongo_heap)
    meter = machine.ProcessMeter()
    rep: dict[str, Any] = {"index": index, "load_before": machine.loadavg()}
    observer: journey.Observer | None = None
    try:
        await asyncio.to_thread(system.start_infra)
        log(f"repetition {index}: raw limits")
        rep["raw"] = {
            "broker": await raw.broker_limits(
                system.rabbitmq_url,
                system.prefix,
                messages=cfg.broker_messages,
                serial_s=min(2.0, cfg.raw_s),
            ),
            "database": await raw.database_limits(
                system.mongodb_url,
                f"{system.db_prefix}raw",
                duration_s=cfg.raw_s,
                warmup_s=min(2.0, cfg.raw_s),
            ),
            "http": await raw.http_limits(system.work_dir / "logs", duration_s=cfg.raw_s),
        }
        log(f"  {json_line(rep['raw'])}")
        await asyncio.to_thread(system.start_services)
        rep["commands"] = dict(system.commands)
        _track_all(meter, system)
        async with load.new_session() as session:
            program_id = await load.create_program(system, session)
            await asyncio.to_thread(load.seed_consent_forms, system)
            # The journey first, on a system at rest: its costs and the bound must not
            # include the backlog an overloaded ramp step leaves behind.
            observer = journey.Observer(system)
            await observer.start()
            driver = journey.Driver(
                system, session, observer, wechat, event_timeout_s=cfg.event_timeout_s
            )
            rep["journey"] = await journey_phase(
                cfg, system, session, driver, program_id, meter, log
            )
            rep["bound"] = bound_dict(bound_for(rep["journey"]["costs"], rep["raw"]))
            rep["bound_gross"] = bound_dict(bound_for(rep["journey"]["costs_gross"], rep["raw"]))
            b = rep["bound"]["additive_per_s"]
            rep["fraction_of_bound"] = (
                None if not b else round(rep["journey"]["enrollments_per_s"] / b, 4)
            )
            log(f"  bound {b}/s, fraction {rep['fraction_of_bound']}")
            # The ramp without the journey's observer consuming every event beside it.
            await observer.close()
            rep["ramp"] = await ramp(cfg, system, session, program_id, meter, log)
            observer = journey.Observer(system)
            await observer.start()
            driver = journey.Driver(
                system, session, observer, wechat, event_timeout_s=cfg.event_timeout_s
            )
            if cfg.journey_target:
                rep["journey_target"] = await journey_at_target(
                    cfg, system, session, driver, program_id, meter, log
                )
            await settle(cfg, system, session, log)
            log(f"  seat race: {cfg.race_n} sign-ups for {SEATS} seats")
            rep["race"] = await race.seat_race(system, program_id, n=cfg.race_n, tag=f"x{index}")
            log(f"    held {rep['race']['held']}, roster {rep['race']['roster_seats_taken']}")
            if cfg.data_size:
                rep["data_size"] = sized = await data_size_phase(
                    cfg, system, session, driver, program_id, meter, log, rep["raw"]
                )
                await observer.close()  # the sign-ups, as in the ramp, without it
                observer = None
                sized["signup"] = await ramp_step(
                    cfg, system, session, program_id, meter, log, cfg.target_rate
                )
        rep["dead_processes"] = system.dead()
    except Exception as exc:
        rep["error"] = f"{type(exc).__name__}: {exc}"
        rep["traceback"] = traceback.format_exc()
        log(f"  repetition {index} failed: {rep['error']}")
        for name, proc in system.procs.items():
            if not proc.alive():
                log(f"  {name} exited; its log ends:\n{proc.log_tail(15)}")
    finally:
        if observer is not None:
            await observer.close()
        await asyncio.to_thread(system.stop)
    try:  # after the stop: every service has flushed its spans
        rep["spans"] = await asyncio.to_thread(spans.summarize, system.work_dir / "traces")
    except Exception as exc:  # the figures above stand without it
        rep["spans_error"] = f"{type(exc).__name__}: {exc}"
    rep["load_after"] = machine.loadavg()
    return rep


async def data_size_phase(
    cfg: Config, system: System, session, driver, program_id: str, meter, log, raw_limits
) -> dict[str, Any]:
    """The database grown to ``cfg.data_size`` registrations, then the journey again:
    what an enrollment costs must not grow with the data."""
    await settle(cfg, system, session, log)
    log(f"  data size: the database grown to {cfg.data_size:,} registrations")
    out: dict[str, Any] = {
        "preload": await asyncio.to_thread(
            preload.grow, system.mongodb_url, system.db_prefix, target=cfg.data_size, log=log
        )
    }
    log(f"    {json_line(out['preload'])}")
    out["journey"] = await journey_phase(cfg, system, session, driver, program_id, meter, log)
    out["bound"] = bound_dict(bound_for(out["journey"]["costs"], raw_limits))
    b = out["bound"]["additive_per_s"]
    out["fraction_of_bound"] = None if not b else round(out["journey"]["enrollments_per_s"] / b, 4)
    log(f"  bound {b}/s, fraction {out['fraction_of_bound']}")
    if cfg.journey_target:
        out["journey_target"] = await journey_at_target(
            cfg, system, session, driver, program_id, meter, log
        )
    return out


async def profile_pass(cfg: Config, work: Path, log) -> dict[str, Any]:
    """A separate run with py-spy on each service: sign-ups at the target rate, then
    journeys. Its own figures are not used anywhere else (the sampler costs CPU)."""
    if profile.py_spy() is None:
        return {"error": "py-spy not installed"}
    wechat = payloads.WechatPay()
    system = System(work / "profile", extra_env=wechat.env())
    out: dict[str, Any] = {}
    observer = None
    try:
        await asyncio.to_thread(system.start_infra)
        await asyncio.to_thread(system.start_services)
        async with load.new_session() as session:
            program_id = await load.create_program(system, session)
            await asyncio.to_thread(load.seed_consent_forms, system)
            duration = cfg.profile_s
            n = int(cfg.target_rate * duration)
            cohorts = await _cohorts_for(system, session, program_id, n, "p", cfg.per_cohort)
            observer = journey.Observer(system)
            await observer.start()
            driver = journey.Driver(system, session, observer, wechat, event_timeout_s=60)
            jn = min(cfg.journey_n, 200)
            jcohorts = await _cohorts_for(system, session, program_id, jn, "pj", SEATS)
            for phase in ("sign_ups", "journeys"):
                files = {}
                recorders = []
                for name in SERVICES:
                    path = system.work_dir / "profiles" / f"{phase}-{name}.txt"
                    p = profile.start(system.procs[name].pid, path, 3600)
                    if p is not None:
                        recorders.append(p)
                        files[name] = path
                await asyncio.sleep(1.0)
                if phase == "sign_ups":
                    log(f"  profiling sign-ups at {cfg.target_rate:g}/s for {duration:g} s")
                    await load.open_loop(
                        cfg.target_rate,
                        duration,
                        _signup_sender(system, session, cohorts, f"p{secrets.token_hex(3)}"),
                    )
                else:
                    log(f"  profiling {jn} journeys")
                    await journey.as_fast_as_possible(
                        driver,
                        jcohorts,
                        n=jn,
                        concurrency=cfg.journey_concurrency,
                        tag=f"pj{secrets.token_hex(3)}",
                    )
                for p in recorders:
                    p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    await asyncio.to_thread(p.wait, 60)
                out[phase] = {
                    name: profile.summarize(path.read_text() if path.exists() else "")
                    for name, path in files.items()
                }
                await wait_drained(
                    system, session, timeout_s=cfg.drain_timeout_s, since=time.monotonic()
                )
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  profile pass failed: {out['error']}")
    finally:
        if observer is not None:
            await observer.close()
        await asyncio.to_thread(system.stop)
    return out


def _signup_sender(system: System, session, cohorts: list[str], tag: str):
    base = system.url("registration")

    async def send(i: int, _intended: float) -> str | None:
        async with session.post(
            f"{base}/cohorts/{cohorts[i % len(cohorts)]}/registrations",
            json=payloads.application(tag, i),
            headers={"Idempotency-Key": f"{tag}-{i}"},
        ) as r:
            await r.read()
            return None if r.status == 202 else f"HTTP {r.status}"

    return send


def json_line(value: Any) -> str:
    import json

    return json.dumps(value, default=str)[:400]


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)
