"""Matrix row 30: sign-ups at a steady rate with a graceful broker restart (row 1) and a
database kill and restart (row 11) injected in the middle (docs/reliability.md).

The row's load is 50 sign-ups/s for 10 minutes. On two cores that is a benchmark, not a
test: ``HOLDSPACE_SOAK_RATE=50 HOLDSPACE_SOAK_S=600 scripts/test
tests/faults/test_sign_ups_under_faults.py`` runs it (docs/reliability.md quotes the last
such run); `.ci/run` runs the same faults at 20/s for 60 s. Registration and
notifications run as processes against a database of this test's own (so it can be
killed) and the shared broker (restarted with ``rabbitmqctl stop_app``/``start_app``).
Clients behave as the API tells them: on 503, 429 or a cut connection they try again
with the same Idempotency-Key after Retry-After. Cohorts have 8 seats and 20 sign-ups
each, as in the benchmark.

Scored with the Jepsen tally: a sign-up is attempted by its key (the address's local
part) and acknowledged by a 202; its effect is the e-mail it causes (a verification
link; an "already registered" note would mean a second registration). Asserted: lost 0,
duplicated 0, unexpected 0; never a 500; every sign-up acknowledged in the end; every
queue drained and nothing dead-lettered. Measured and reported, not asserted (speed is
the benchmark's to judge, never a timed test's): the sign-up latency p99 (first answer,
and until acknowledged), and from the 202 to the e-mail in the sink, the upper bound of
outbox-to-consumer, p99 away from the faults and within 30 s of one.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.devinfra import EmbeddedMongo
from tests.e2e.harness import System, write_report
from tests.e2e.journey import Journey, create_program
from tests.faults.harness import Tally, sign_up_body
from tests.integration.helpers_messaging import eventually

RATE_PER_S = float(os.environ.get("HOLDSPACE_SOAK_RATE", "20"))
LOAD_S = float(os.environ.get("HOLDSPACE_SOAK_S", "60"))
PER_COHORT = 20
BROKER_DOWN_S = 5.0
DATABASE_DOWN_S = 3.0
FAULT_WINDOW_S = 30.0  # "in faults": acknowledged within this long of a fault's end


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    db = EmbeddedMongo(data_dir=tmp_path_factory.mktemp("soak-db")).start()
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="module")
async def system(
    database: EmbeddedMongo, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    client: AsyncMongoClient = AsyncMongoClient(database.url, tz_aware=True)
    s = System(
        database.url,
        rabbitmq_url,
        client,
        tmp_path_factory.mktemp("e2e-soak"),
        services=("registration", "notifications"),
        settings={"DATABASE_TIMEOUT_S": "2"},
    )
    await s.start()
    try:
        yield s
    finally:
        await s.close()
        await client.close()


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)], 3)


class Load:
    """Open-loop sign-ups: each sent at its moment, retried as the answer says."""

    def __init__(self, system: System, cohorts: list[str], tag: str) -> None:
        self.system = system
        self.cohorts = cohorts
        self.tag = tag
        self.tally = Tally()
        self.statuses: Counter[int] = Counter()
        self.first_answer: list[float] = []
        self.until_acknowledged: list[float] = []
        self.acknowledged_at: dict[str, float] = {}

    def key(self, n: int) -> str:
        return f"soak-{self.tag}-{n:05d}"

    async def sign_up(self, n: int, due: float) -> None:
        key, cohort = self.key(n), self.cohorts[n // PER_COHORT]
        url = f"{self.system.url('registration')}/cohorts/{cohort}/registrations"
        give_up = due + 300
        while True:
            try:
                answer = await self.system.http.post(
                    url, json=sign_up_body(key, "Soak"), headers={"Idempotency-Key": key}
                )
                status, wait = answer.status_code, float(answer.headers.get("Retry-After", "1"))
            except httpx.TransportError:
                status, wait = 0, 1.0
            now = time.monotonic()
            if key not in self.tally.attempted:
                self.first_answer.append(now - due)
            self.statuses[status] += 1
            if status == 202:
                self.tally.attempt(key, acknowledged=True)
                self.acknowledged_at[key] = now
                self.until_acknowledged.append(now - due)
                return
            self.tally.attempt(key, acknowledged=False)
            if status not in (0, 429, 503) or now > give_up:
                return
            await asyncio.sleep(wait)

    async def run(self, count: int) -> None:
        start = time.monotonic()
        tasks = []
        for n in range(count):
            due = start + n / RATE_PER_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(self.sign_up(n, due)))
        await asyncio.gather(*tasks)


def _server_p99_bound_s(metrics_text: str) -> float | str:
    """The upper bound of the bucket holding the 99th percentile of the sign-up route's
    latency as the service measured it (its histogram): the server's own time, without
    the queueing in this process, which also runs the load and the SMTP sink."""
    route = 'route="/cohorts/{cohort_id}/registrations"'
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("holdspace_http_request_seconds_bucket{") and route in line:
            if 'method="POST"' in line:
                le = line.split('le="')[1].split('"')[0]
                buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if count >= 0.99 * total:
            return le if le != float("inf") else "> 5 s"
    return "not measured"


def _mail(system: System, templates: tuple[str, ...]) -> list:
    with system.sink.lock:
        return [r for r in system.sink.received if r.template in templates]


@pytest.mark.faults
@pytest.mark.timeout(int(LOAD_S * 3 + 900))
async def test_sign_ups_through_a_broker_and_a_database_restart_lose_and_repeat_nothing(
    system: System, database: EmbeddedMongo
) -> None:
    count = int(RATE_PER_S * LOAD_S)
    journey = Journey(system, await create_program(system), "soak")
    cohorts = []
    for _ in range(math.ceil(count / PER_COHORT)):
        await journey.open_cohort()
        cohorts.append(journey.cohort_id)
    load = Load(system, cohorts, journey.tag)
    faults: list[tuple[str, float, float]] = []  # (what, began, ended)

    async def restart_broker() -> None:
        await asyncio.sleep(LOAD_S / 3)
        began = time.monotonic()
        try:
            await system.stop_broker()
            await asyncio.sleep(BROKER_DOWN_S)
        finally:
            await system.start_broker()
        faults.append(("broker restart", began, time.monotonic()))

    async def restart_database() -> None:
        await asyncio.sleep(2 * LOAD_S / 3)
        began = time.monotonic()
        database.kill()
        await asyncio.sleep(DATABASE_DOWN_S)
        await asyncio.to_thread(database.start)  # same port, same journal
        faults.append(("database kill and restart", began, time.monotonic()))

    started = time.monotonic()
    await asyncio.gather(load.run(count), restart_broker(), restart_database())
    loaded = time.monotonic()
    tally = load.tally

    async def all_told() -> bool:
        told = {to.split("@")[0] for r in _mail(system, ("verify_email",)) for to in r.rcpt_tos}
        missing = len(tally.acknowledged - told)
        assert missing == 0, f"{missing} of {len(tally.acknowledged)} not yet told"
        return True

    await eventually(all_told, timeout=max(300.0, count / 5), interval=2, what="every e-mail")
    told_after_load_s = round(time.monotonic() - loaded, 1)

    async def drained() -> bool:
        figures = await system.queue_figures()
        assert not any(ready for ready, _ in figures.values()), figures
        return True

    await eventually(drained, timeout=120, interval=1, what="every queue drained")
    effects = _mail(system, ("verify_email", "already_registered"))
    tally.found(to.split("@")[0] for r in effects for to in r.rcpt_tos)
    first_mail = {}
    for r in sorted(effects, key=lambda r: r.at):
        for to in r.rcpt_tos:
            first_mail.setdefault(to.split("@")[0], r.at)

    def near_a_fault(at: float) -> bool:
        return any(began <= at <= ended + FAULT_WINDOW_S for _, began, ended in faults)

    to_mail = {
        key: first_mail[key] - at for key, at in load.acknowledged_at.items() if key in first_mail
    }
    report = {
        "load": {"rate_per_s": RATE_PER_S, "seconds": LOAD_S, "sign_ups": count},
        "faults": [
            {"what": what, "at_s": round(began - started, 1), "s": round(end - began, 1)}
            for what, began, end in faults
        ],
        "statuses": dict(load.statuses),
        "sign_up_first_answer_p99_s": _p99(load.first_answer),
        "sign_up_server_p99_at_most_s": _server_p99_bound_s(
            (await system.http.get(f"{system.url('registration')}/metrics")).text
        ),
        "sign_up_until_acknowledged_p99_s": _p99(load.until_acknowledged),
        "acknowledged_to_email_p99_s": {
            "away_from_faults": _p99(
                [s for k, s in to_mail.items() if not near_a_fault(load.acknowledged_at[k])]
            ),
            "within_30_s_of_a_fault": _p99(
                [s for k, s in to_mail.items() if near_a_fault(load.acknowledged_at[k])]
            ),
        },
        "all_told_after_load_s": told_after_load_s,
        "tally": tally.score(),
    }
    write_report("sign-ups-under-faults", report)
    print(f"row 30: {report}")

    repeated = {
        key: [(r.template, round(r.at - started, 1)) for r in effects if key in r.rcpt_tos[0]]
        for key in sorted(tally.duplicated)[:5]
    }
    assert not tally.duplicated, f"{tally.score()}; e.g. {repeated}; faults {report['faults']}"
    tally.assert_valid()
    assert load.statuses[500] == 0, load.statuses
    assert len(tally.acknowledged) == count, report
    assert len(faults) == 2, faults
    assert load.statuses[503] + load.statuses[0] >= 1, f"the database was never missed: {report}"
    dead = {q: ready for q, (ready, _) in (await system.queue_figures()).items() if ".dlq" in q}
    assert not any(dead.values()), dead
