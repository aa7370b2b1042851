"""Matrix row 11, as far as one database node allows: the database killed (SIGKILL) and
started again in the middle of the row's 500 sign-ups (docs/reliability.md).

MongoDB's row is a primary stepping down under load; mongo-java-server has no replica
set, so this injects what the API sees of it: the database gone mid-write, then back a
few seconds later with what it acknowledged (its journal survives kill -9). Clients
behave as the API tells them: on 503 (or a cut connection) they retry with the same
Idempotency-Key after Retry-After.

Pass: never a 500; every acknowledged sign-up readable afterwards, exactly once (tally:
lost 0, duplicated 0, unexpected 0); the API writable again within 10 s of the restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.devinfra import EmbeddedMongo
from tests.faults.harness import Tally
from tests.integration.registration_api import RegistrationApi, application
from tests.services import ServiceProcess, service_env

SIGN_UPS = 500  # the row's load
RATE_PER_S = 40
KILL_AT = 160  # the sign-up after which the database is killed
DOWN_S = 3.0


def _key_id(cohort_id: str, key: str) -> str:
    """How registration stores an Idempotency-Key (services/registration/signups.py)."""
    return hashlib.sha256(f"{cohort_id}\n{key}".encode()).hexdigest()


@pytest.mark.faults
@pytest.mark.timeout(300)
async def test_sign_ups_across_a_database_restart_are_kept_once_and_never_a_500(
    database: EmbeddedMongo, rabbitmq_url: str, run_id: str, tmp_path: Path
) -> None:
    env = service_env(database.url, rabbitmq_url, run_id, DATABASE_TIMEOUT_S="2")
    registration = await asyncio.to_thread(ServiceProcess("registration", env, tmp_path).start)
    statuses: Counter[int] = Counter()
    tally = Tally()
    notes: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(base_url=registration.url, timeout=30) as client:
            api = RegistrationApi(client)
            cohort_id = await api.cohort(await api.program(approval_required=False))

            async def sign_up(n: int) -> None:
                key = f"restart-{run_id}-{n:04d}"
                deadline = time.monotonic() + 120
                while True:  # a client that does what the answer says
                    try:
                        answer = await client.post(
                            f"/cohorts/{cohort_id}/registrations",
                            json=application(n, email=f"restart-{run_id}-{n}@example.org"),
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        statuses[0] += 1
                        await asyncio.sleep(1)
                        continue
                    statuses[answer.status_code] += 1
                    if answer.status_code in (202, 409, 429, 503) and time.monotonic() < deadline:
                        if answer.status_code == 202:
                            tally.attempt(key, acknowledged=True)
                            return
                        await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                        continue
                    tally.attempt(key, acknowledged=False)
                    return

            async def kill_and_restart() -> None:
                database.kill()
                await asyncio.sleep(DOWN_S)
                await asyncio.to_thread(database.start)  # same port, same journal
                notes["restarted_at"] = time.monotonic()

            tasks = []
            for n in range(SIGN_UPS):
                tasks.append(asyncio.create_task(sign_up(n)))
                if n == KILL_AT:
                    tasks.append(asyncio.create_task(kill_and_restart()))
                await asyncio.sleep(1 / RATE_PER_S)
            await asyncio.gather(*tasks)
            probe = await client.post(
                f"/cohorts/{cohort_id}/registrations",
                json=application(9999, email=f"restart-{run_id}-probe@example.org"),
                headers={"Idempotency-Key": "probe-after-restart"},
            )
            assert probe.status_code == 202, probe.text
            tally.attempt("probe-after-restart", acknowledged=True)
            # Every client got its 202 (or gave up) and a new sign-up went through.
            notes["all_answered_after_restart_s"] = round(
                time.monotonic() - notes.pop("restarted_at"), 2
            )

        mongo: AsyncMongoClient = AsyncMongoClient(database.url, tz_aware=True)
        try:
            db = mongo[f"t{run_id}_registration"]
            stored = [d["_id"] async for d in db["registrations"].find({"cohort_id": cohort_id})]
            # The registration each key made, as registration keeps it (the answer to a
            # sign-up names no registration: it is the same for every address).
            key_ids = {_key_id(cohort_id, key): key for key in tally.attempted}
            made_by = {
                d["registration_id"]: key_ids[d["_id"]]
                async for d in db["idempotency"].find({"_id": {"$in": list(key_ids)}})
            }
        finally:
            await mongo.close()
    finally:
        registration.stop()

    # Each registration stored is the effect of the sign-up whose key made it.
    tally.found(made_by.get(rid, f"made by no key: {rid}") for rid in stored)
    tally.assert_valid()
    assert statuses[500] == 0, statuses
    assert len(tally.acknowledged) == SIGN_UPS + 1, (tally.score(), statuses)
    assert statuses[503] + statuses[0] >= 1, f"the outage was never seen: {statuses}"
    assert notes["all_answered_after_restart_s"] <= 10, notes
    print(f"row 11: {dict(statuses)} {notes} tally {tally.score()}")
