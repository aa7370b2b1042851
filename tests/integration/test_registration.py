"""The registration service as a real process: seats, waitlist, review, events, privacy.

The service runs under uvicorn against the real broker and database; the tests
talk to it over HTTP, read its database to check what it stored, publish the
consent and payment events the other services would, and listen on the public
exchange as an outside subscriber would.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from bson import json_util

from shared import events as ev
from shared.security import Role
from tests.bus import TestBus
from tests.canary import CANARY
from tests.conftest import short_id
from tests.integration.helpers_messaging import eventually
from tests.integration.registration_api import RECOVERY_GROUP, RegistrationApi, application
from tests.services import ServiceProcess, coordinator_headers, service_env

REPORTS = Path(__file__).resolve().parents[2] / "var" / "reports"


class System(TestBus):
    """One isolated registration deployment: its processes, names and a subscriber."""

    def __init__(self, run_id: str, env: dict[str, str], processes: list[ServiceProcess]):
        super().__init__(env)
        self.run_id = run_id
        self.processes = processes
        self.public_events: list[dict[str, Any]] = []

    @property
    def db_name(self) -> str:
        return f"{self.env['HOLDSPACE_DB_PREFIX']}registration"

    async def subscribe_public(self) -> None:
        self.public_events = await self.listen("public", "enrollment.#")

    async def close(self) -> None:
        await self.close_bus()
        for process in self.processes:
            process.stop()


def start_system(
    mongodb_url, rabbitmq_url, log_dir: Path, replicas: int = 1, **extra_env: str
) -> System:
    run_id = short_id()
    env = service_env(mongodb_url, rabbitmq_url, run_id, **extra_env)
    processes = [ServiceProcess("registration", env, log_dir).start() for _ in range(replicas)]
    return System(run_id, env, processes)


@pytest.fixture(scope="module")
async def system(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[System]:
    s = start_system(mongodb_url, rabbitmq_url, tmp_path_factory.mktemp("registration"))
    await s.subscribe_public()
    yield s
    await s.close()


@pytest.fixture
async def api(system: System) -> AsyncIterator[RegistrationApi]:
    async with httpx.AsyncClient(base_url=system.processes[0].url, timeout=30) as client:
        yield RegistrationApi(client, system)


@pytest.fixture
def regdb(system: System, mongo_client):
    return mongo_client[system.db_name]


async def ledger_entry(regdb, cohort_id: str, registration_id: str) -> dict[str, Any]:
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    return cohort["entries"][registration_id]


async def wait_status(api: RegistrationApi, registration: dict, status: str, timeout=15.0):
    async def check() -> dict:
        current = await api.status(registration)
        assert current["status"] == status, current
        return current

    return await eventually(check, timeout=timeout, interval=0.1, what=f"status {status}")


# --- the seat race -------------------------------------------------------------------


async def race(
    urls: list[str], n: int, send: Callable[[aiohttp.ClientSession, str, int], Any]
) -> tuple[list[Answer], list[float]]:
    """n requests at once, spread over the replicas (``send(session, base_url, i)``);
    returns answers and latencies (s).

    aiohttp, not httpx, drives the race: with 1,000 requests in flight httpx's
    connection pool costs a whole core, and the race then measures the client.

    A request the service's admission control refuses (503 with Retry-After: nothing
    was done) is sent again when told, spread out, as a client does; the latency is
    from the first try to the answer.
    """
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> Answer:
            started = time.perf_counter()
            for _ in range(60):
                async with send(session, urls[i % len(urls)], i) as r:
                    answer = Answer(r.status, await r.text())
                    retry_after = r.headers.get("Retry-After")
                if answer.status_code != 503 or retry_after is None:
                    break
                await asyncio.sleep(int(retry_after) * (1 + random.random()))
            latencies.append(time.perf_counter() - started)
            return answer

        answers = await asyncio.gather(*(one(i) for i in range(n)))
    return answers, latencies


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def check_race(system: System, regdb, api: RegistrationApi, replicas: int) -> None:
    """1,000 sign-ups, then their 1,000 verifications at once: the verifications race
    for the seats (a sign-up holds nothing before)."""
    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    urls = [p.url for p in system.processes]
    await api.watch_links()
    signed, _ = await race(
        urls,
        1000,
        lambda session, url, i: session.post(
            f"{url}/cohorts/{cohort_id}/registrations",
            json=application(i),
            headers={"Idempotency-Key": f"race-{i}-{cohort_id}"},
        ),
    )
    assert sorted({r.status_code for r in signed}) == [202], [
        r.text for r in signed if r.status_code != 202
    ][:3]
    links = [await api.link_for(cohort_id, application(i)["email"]) for i in range(1000)]
    started = time.perf_counter()
    answers, latencies = await race(
        urls,
        1000,
        lambda session, url, i: session.post(
            f"{url}/registrations/{links[i][0]}/verify-email",
            headers={"Authorization": f"Bearer {links[i][1]}"},
        ),
    )
    wall = time.perf_counter() - started

    assert sorted({r.status_code for r in answers}) == [200], [
        r.text for r in answers if r.status_code != 200
    ][:3]
    bodies = [r.json() for r in answers]
    held = [b for b in bodies if b["status"] == "pending_review"]
    waitlisted = [b for b in bodies if b["status"] == "waitlisted"]
    assert len(held) == 8
    assert len(waitlisted) == 992
    assert sorted(b["waitlist_position"] for b in waitlisted) == list(range(1, 993))

    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    holders = [r for r, e in cohort["entries"].items() if e["status"] == "pending_review"]
    assert sorted(holders) == sorted(b["registration_id"] for b in held)
    assert cohort["seats_taken"] == len(holders) == 8
    assert len(cohort["waitlist"]) == 992
    assert cohort["waitlist"] == [
        b["registration_id"] for b in sorted(waitlisted, key=lambda b: b["waitlist_position"])
    ]
    assert await regdb.registrations.count_documents({"cohort_id": cohort_id}) == 1000

    listing = (await api.client.get(f"/cohorts/{cohort_id}")).json()
    assert listing["seats_left"] == 0

    REPORTS.mkdir(parents=True, exist_ok=True)
    report = {
        "replicas": replicas,
        "verifications": 1000,
        "wall_s": round(wall, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "held": len(held),
        "waitlisted": len(waitlisted),
    }
    (REPORTS / f"seat-race-{replicas}-replica.json").write_text(json.dumps(report, indent=2))
    print("seat race", report)


async def test_thousand_concurrent_sign_ups_for_eight_seats(system, regdb, api) -> None:
    await check_race(system, regdb, api, replicas=1)


@pytest.fixture(scope="module")
async def two_replicas(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[System]:
    s = start_system(
        mongodb_url, rabbitmq_url, tmp_path_factory.mktemp("registration2"), replicas=2
    )
    yield s
    await s.close()


async def test_thousand_sign_ups_over_two_replicas_for_eight_seats(
    two_replicas, mongo_client
) -> None:
    async with httpx.AsyncClient(base_url=two_replicas.processes[0].url, timeout=30) as c:
        api = RegistrationApi(c, two_replicas)
        await check_race(two_replicas, mongo_client[two_replicas.db_name], api, 2)


# --- waitlist, offers and expiries ---------------------------------------------------------


async def test_hold_expiry_promotes_the_head_and_an_unanswered_offer_passes_on(api) -> None:
    program_id = await api.program(capacity=1)
    # Long enough for three sign-ups on a busy machine, short enough to wait for.
    cohort_id = await api.cohort(program_id, hold_seconds=5, offer_seconds=3)
    first = await api.signed_up(cohort_id, 1)
    held_since = time.monotonic()
    second = await api.signed_up(cohort_id, 2)
    third = await api.signed_up(cohort_id, 3)
    assert [first["status"], second["status"], third["status"]] == [
        "pending_review",
        "waitlisted",
        "waitlisted",
    ]
    assert (second["waitlist_position"], third["waitlist_position"]) == (1, 2)

    await wait_status(api, first, "expired")
    # A hold is freed within its time plus a minute (matrix row 24).
    assert time.monotonic() - held_since <= 5 + 60
    offered = await wait_status(api, second, "offered")
    assert offered["expires_at"] is not None
    assert (await api.status(third))["waitlist_position"] == 1

    await wait_status(api, second, "expired")  # never answered
    await wait_status(api, third, "offered")
    r = await api.applicant_post(third, "accept-offer")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending_review"
    late = await api.applicant_post(second, "accept-offer")
    assert late.status_code == 409


async def test_withdrawal_offers_the_seat_to_the_head_of_the_waitlist(api, system) -> None:
    program_id = await api.program(capacity=1)
    cohort_id = await api.cohort(program_id)
    holder = await api.signed_up(cohort_id, 1)
    waiting = await api.signed_up(cohort_id, 2)
    r = await api.applicant_post(holder, "withdraw")
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    assert (await api.status(waiting))["status"] == "offered"
    again = await api.applicant_post(holder, "withdraw")
    assert again.status_code == 409


async def test_a_confirmed_seat_is_never_offered_again(api, system, regdb) -> None:
    program_id = await api.program(capacity=1, approval_required=False)
    cohort_id = await api.cohort(program_id, hold_seconds=2, offer_seconds=2)
    holder = await api.signed_up(cohort_id, 1)
    waiting = await api.signed_up(cohort_id, 2)
    assert holder["status"] == "awaiting_consent"
    rid = holder["registration_id"]
    await system.publish(
        ev.ConsentSigned(
            registration_id=rid,
            form_id="f1",
            form_version=1,
            text_sha256="0" * 64,
            signed_at=datetime.now(UTC),
        )
    )
    await wait_status(api, holder, "awaiting_payment")
    confirmed = ev.PaymentConfirmed(
        registration_id=rid,
        payment_id="p1",
        amount=ev.Money(amount_minor=90000, currency="CNY"),
        reference="HS-1",
        method="manual",
        confirmed_at=datetime.now(UTC),
    )
    envelope = await system.publish(confirmed)
    await wait_status(api, holder, "confirmed")
    await system.publish(confirmed, event_id=envelope.id)  # redelivered
    await system.publish(ev.PaymentExpired(registration_id=rid, payment_id="p1"))  # late

    await asyncio.sleep(3)  # past the hold and offer durations
    assert (await api.status(holder))["status"] == "confirmed"
    assert (await api.status(waiting))["status"] == "waitlisted"
    mine = await eventually(
        lambda: [
            e
            for e in system.public_events
            if e["type"] == "enrollment.confirmed" and e["data"]["registration_id"] == rid
        ],
        what="enrollment.confirmed on the public exchange",
    )
    await asyncio.sleep(0.5)
    assert len(mine) == 1
    entry = await ledger_entry(regdb, cohort_id, rid)
    assert entry["status"] == "confirmed" and entry["expires_at"] is None


# --- one applicant's token on another's registration (matrix row 21) ----------------------

APPLICANT_ROUTES = [
    ("GET", ""),
    ("GET", "/export"),
    ("GET", "/joining"),
    ("GET", "/erasure"),
    ("POST", "/verify-email"),
    ("POST", "/accept-offer"),
    ("POST", "/withdraw"),
    ("POST", "/erasure"),
]


async def test_an_applicants_real_token_opens_nothing_of_another_real_registration(
    api, regdb
) -> None:
    cohort_id = await api.cohort(await api.program(approval_required=False))
    a = await api.signed_up(cohort_id, 1)
    b = await api.signed_up(cohort_id, 2)
    b_before = await regdb.registrations.find_one({"_id": b["registration_id"]})
    as_a = {"Authorization": f"Bearer {a['access_token']}"}
    unknown = await api.client.get("/registrations/no-such-registration", headers=as_a)
    assert unknown.status_code == 404
    answers = []
    for method, tail in APPLICANT_ROUTES:
        answer = await api.client.request(
            method, f"/registrations/{b['registration_id']}{tail}", headers=as_a
        )
        answers.append((method, tail, answer.status_code))
        # The same answer as for an id that does not exist: B's registration is not
        # even confirmed to exist, and nothing of B's is in it.
        assert answer.status_code == 404, (method, tail, answer.text)
        assert answer.json()["detail"] == unknown.json()["detail"]
        assert "applicant2" not in answer.text and "Applicant 2" not in answer.text
    assert len(answers) == len(APPLICANT_ROUTES)
    b_after = await regdb.registrations.find_one({"_id": b["registration_id"]})
    assert b_after == b_before  # nothing of B's changed
    assert (await api.status(b))["status"] == b["status"]


# --- safety routing ----------------------------------------------------------------------


async def test_a_safety_flag_never_reaches_confirmed_without_a_coordinator(api, system) -> None:
    program_id = await api.program(
        approval_required=False, price={"amount_minor": 0, "currency": "CNY"}
    )
    cohort_id = await api.cohort(program_id)
    flagged = await api.signed_up(cohort_id, 1, safety_answers={"self_harm": True})
    assert flagged["status"] == "pending_review"
    assert flagged["crisis_resources"] == [
        {"name": "Crisis line", "contact": "400-161-9995", "url": None}
    ]
    rid = flagged["registration_id"]
    for data in (
        ev.ConsentSigned(
            registration_id=rid,
            form_id="f1",
            form_version=1,
            text_sha256="0" * 64,
            signed_at=datetime.now(UTC),
        ),
        ev.PaymentWaived(registration_id=rid, payment_id="p"),
    ):
        await system.publish(data)
    await asyncio.sleep(1.5)
    assert (await api.status(flagged))["status"] == "pending_review"

    listed = await api.client.get(
        f"/cohorts/{cohort_id}/registrations", params={"flagged": "true"}, headers=api.coordinator
    )
    assert [r["registration_id"] for r in listed.json()] == [rid]
    r = await api.coordinator_post(rid, "approve")
    assert r.status_code == 200 and r.json()["status"] == "awaiting_consent"
    await system.publish(
        ev.ConsentSigned(
            registration_id=rid,
            form_id="f1",
            form_version=1,
            text_sha256="0" * 64,
            signed_at=datetime.now(UTC),
        )
    )
    await wait_status(api, flagged, "confirmed")  # free program: consent confirms it


async def test_rejection_frees_the_seat_and_keeps_the_reason_sealed(api, regdb) -> None:
    program_id = await api.program(capacity=1)
    cohort_id = await api.cohort(program_id)
    applicant = await api.signed_up(cohort_id, 1)
    waiting = await api.signed_up(cohort_id, 2)
    reason = "Not the right group for now - distinctive-reason-7731"
    r = await api.coordinator_post(applicant["registration_id"], "reject", {"reason": reason})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert (await api.status(waiting))["status"] == "offered"
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    assert "distinctive-reason-7731" not in json_util.dumps(cohort)
    twice = await api.coordinator_post(applicant["registration_id"], "reject", {"reason": "x"})
    assert twice.status_code == 409


# --- bad input -----------------------------------------------------------------------------


BAD_INPUT = [
    ("under-age", {"date_of_birth": "2015-01-01", "age_attested": False}, 422, "date_of_birth"),
    ("no age at all", {"age_attested": False}, 422, "age_attested"),
    ("malformed email", {"email": "not-an-address"}, 422, "email"),
    ("missing safety answer", {"safety_answers": {}}, 422, "safety_answers.self_harm"),
    ("wrong type", {"age_attested": "perhaps"}, 422, "age_attested"),
    ("privacy notice", {"privacy_notice_accepted": False}, 422, "privacy_notice_accepted"),
    ("unknown field", {"favourite_colour": "blue"}, 422, "favourite_colour"),
    ("NUL in name", {"name": "A\u0000B"}, 422, "name"),
]


# Fields the server owns, offered by a client anyway (matrix row 22, OWASP API3).
MASS_ASSIGNMENT = {
    "seats_taken": 0,
    "role": "coordinator",
    "payment_status": "paid",
    "status": "confirmed",
    "registration_id": "chosen-by-the-client",
    "version": 99,
}


async def test_fields_the_server_owns_are_refused_by_name_and_nothing_changes(api, regdb) -> None:
    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    cohort_before = await regdb.cohorts.find_one({"_id": cohort_id})
    cohorts_before = await regdb.cohorts.count_documents({})
    for field, value in MASS_ASSIGNMENT.items():
        sign_up = await api.sign_up(cohort_id, {**application(1), field: value})
        new_cohort = await api.client.post(
            f"/programs/{program_id}/cohorts",
            json=api.cohort_body(**{field: value}),
            headers=api.coordinator,
        )
        for answer in (sign_up, new_cohort):
            assert answer.status_code == 422, (field, answer.text)
            problem = answer.json()
            named = {e["field"] for e in problem.get("errors", [])} | {problem.get("field")}
            assert field in named, (field, problem)
    assert await regdb.registrations.count_documents({"cohort_id": cohort_id}) == 0
    assert await regdb.cohorts.count_documents({}) == cohorts_before
    assert await regdb.cohorts.find_one({"_id": cohort_id}) == cohort_before


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(api, regdb) -> None:
    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    for label, change, status, field in BAD_INPUT:
        r = await api.sign_up(cohort_id, application(1, **change))
        assert r.status_code == status, (label, r.text)
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        fields = {e["field"] for e in problem.get("errors", [])} | {problem.get("field")}
        assert field in fields, (label, problem)

    unknown = await api.sign_up("no-such-cohort", application(1))
    assert unknown.status_code == 404 and unknown.json()["field"] == "cohort_id"

    closed_cohort = await api.cohort(
        program_id,
        registration_opens_at=(datetime.now(UTC) - timedelta(days=3)).isoformat(),
        registration_closes_at=(datetime.now(UTC) - timedelta(days=1)).isoformat(),
    )
    closed = await api.sign_up(closed_cohort, application(1))
    assert closed.status_code == 409 and closed.json()["field"] == "cohort_id"

    huge = await api.sign_up(
        cohort_id, application(1, name="x" * 100, scholarship_reason="y" * 70_000)
    )
    assert huge.status_code == 413

    no_key = await api.client.post(f"/cohorts/{cohort_id}/registrations", json=application(1))
    assert no_key.status_code == 422
    assert "Idempotency-Key" in no_key.json()["detail"]

    assert await regdb.registrations.count_documents({"cohort_id": cohort_id}) == 0
    assert await regdb.registrations.count_documents({"cohort_id": closed_cohort}) == 0
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    assert cohort["entries"] == {} and cohort["outbox"] == []

    await api.watch_links()
    ok = await api.sign_up(cohort_id, application(1), key="replayed-key-0001")
    assert ok.status_code == 202
    again = await api.sign_up(cohort_id, application(1), key="replayed-key-0001")
    assert (again.status_code, again.json()) == (ok.status_code, ok.json())
    other = await api.sign_up(cohort_id, application(2), key="replayed-key-0001")
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    assert await regdb.registrations.count_documents({"cohort_id": cohort_id}) == 1
    await api.link_for(cohort_id, application(1)["email"])
    await asyncio.sleep(1)
    assert [e for e in await api.watch_links() if e["data"]["cohort_id"] == cohort_id] == [], (
        "a retried sign-up sends no second email"
    )


async def test_a_known_address_is_answered_as_a_new_one_and_only_its_owner_hears(
    api, regdb
) -> None:
    """A stranger who tries an address learns nothing: the same status, body and
    headers, and the same time within noise (both paths make the same writes)."""
    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    known = await api.signed_up(cohort_id, 1)
    answers: dict[str, list[httpx.Response]] = {"known": [], "new": []}
    took: dict[str, list[float]] = {"known": [], "new": []}
    for i in range(15):  # interleaved, so load on the machine falls on both alike
        for kind, body in (("known", application(1)), ("new", application(100 + i))):
            started = time.perf_counter()
            answers[kind].append(await api.sign_up(cohort_id, body))
            took[kind].append(time.perf_counter() - started)

    def seen(r: httpx.Response) -> str:
        body = r.json()
        assert datetime.fromisoformat(body.pop("verify_by")) > datetime.now(UTC)
        varying = ("date", "content-length", "x-correlation-id")
        headers = sorted((k, v) for k, v in r.headers.items() if k not in varying)
        return json.dumps([r.status_code, body, headers])

    assert {seen(r) for r in answers["known"]} == {seen(r) for r in answers["new"]}
    assert len({seen(r) for r in answers["known"]}) == 1
    known_ms, new_ms = (statistics.median(took[k]) * 1000 for k in ("known", "new"))
    print(f"sign-up median: known address {known_ms:.1f} ms, new address {new_ms:.1f} ms")
    assert abs(known_ms - new_ms) < max(15.0, new_ms / 2), (known_ms, new_ms)

    for _ in range(15):  # the owner is told each time, with no link to anything
        rid, token = await api.link_for(cohort_id, application(1)["email"])
        assert token is None and rid != known["registration_id"]
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    assert list(cohort["entries"]) == [known["registration_id"]]
    listed = await api.client.get(f"/cohorts/{cohort_id}/registrations", headers=api.coordinator)
    assert sum(r["email"] == application(1)["email"] for r in listed.json()) == 1


def _refusals_logged(system: System, since: int) -> list[tuple[int, str, str | None]]:
    """The audit lines the service wrote after ``since`` characters of its log."""
    found = []
    for line in system.processes[0].log_text()[since:].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "access refused" and entry.get("audit"):
            found.append((entry["status"], entry["route"], entry.get("role")))
    return found


async def test_coordinator_endpoints_deny_by_default(api, system) -> None:
    since = len(system.processes[0].log_text())
    r = await api.client.get("/programs")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await api.client.get("/programs", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 401
    r = await api.client.get("/programs", headers=coordinator_headers(Role.operator))
    assert r.status_code == 403
    r = await api.client.get("/programs", headers=api.coordinator)
    assert r.status_code == 200
    anonymous = await api.client.get("/registrations/whatever")
    assert anonymous.status_code == 401
    wrong_token = await api.client.get(
        "/registrations/whatever", headers={"Authorization": "Bearer nope"}
    )
    assert wrong_token.status_code == 404

    # Every refusal of a staff route is audited: status, route, the token's role, never
    # the token itself.
    async def audited() -> bool:
        assert _refusals_logged(system, since) == [
            (401, "/programs", None),
            (401, "/programs", None),
            (403, "/programs", "operator"),
        ]
        return True

    await eventually(audited, timeout=5, what="the refusals in the audit log")
    assert "garbage" not in system.processes[0].log_text()[since:]


# --- privacy --------------------------------------------------------------------------------


async def test_personal_data_never_appears_in_clear(api, system, regdb) -> None:
    program_id = await api.program(capacity=1)
    cohort_id = await api.cohort(program_id)
    holder = await api.signed_up(cohort_id, 89)
    secret_email = "wen.private.7731@example.org"
    secret_name = "Wenjing Secretname"
    registration = await api.signed_up(
        cohort_id,
        90,
        name=secret_name,
        email=secret_email,
        chat_handle="wechat-secret-handle",
        safety_answers={"self_harm": True},
        date_of_birth="1990-04-05",
        age_attested=False,
    )
    rid = registration["registration_id"]
    assert registration["status"] == "waitlisted"  # so a public event names it
    await api.coordinator_post(holder["registration_id"], "reject", {"reason": "test"})
    await api.applicant_post(registration, "accept-offer")
    await api.coordinator_post(rid, "approve")
    await api.applicant_post(registration, "withdraw")

    # What a coordinator sees is the clear text (the check below is not vacuous).
    listed = await api.client.get(f"/cohorts/{cohort_id}/registrations", headers=api.coordinator)
    mine = next(r for r in listed.json() if r["registration_id"] == rid)
    assert mine["email"] == secret_email and mine["safety_answers"] == {"self_harm": True}

    await asyncio.sleep(1)  # let the relay publish
    stored = ""
    for name in await regdb.list_collection_names():
        if name == "programs":
            continue  # holds the questions, not anybody's answers
        stored += json_util.dumps([d async for d in regdb[name].find()])
    logs = "".join(p.log_text() for p in system.processes)
    public = json.dumps(system.public_events)
    assert rid in stored and rid in public  # we are looking at the right data
    for secret in (secret_email, secret_name, "wechat-secret-handle", "1990-04-05", "self_harm"):
        assert secret not in stored, secret
        assert secret not in logs, secret
        assert secret not in public, secret


def test_seat_race_reports_are_written() -> None:
    # Runs after the races above (file order): the note quotes these figures.
    for replicas in (1, 2):
        report = json.loads((REPORTS / f"seat-race-{replicas}-replica.json").read_text())
        assert report["held"] == 8 and report["waitlisted"] == 992


@pytest.fixture(autouse=True, scope="module")
def _order_guard() -> Iterator[None]:
    yield


async def test_seed_loads_the_three_programs_once(system, api) -> None:
    import subprocess
    import sys
    from zoneinfo import ZoneInfo

    def run_seed() -> str:
        out = subprocess.run(
            # Only registration runs here: the budgets (payments) are tested on their own.
            [
                sys.executable,
                "-m",
                "registration.seed",
                "--url",
                system.processes[0].url,
                "--no-budgets",
            ],
            env=system.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    first = run_seed()
    assert "3 programs, 5 cohorts" in first
    assert "0 programs, 0 cohorts" in run_seed()

    cohorts = (await api.client.get("/cohorts")).json()
    recovery = [c for c in cohorts if c["kind"] == "recovery_group" and "Starts" in c["label"]]
    assert len(recovery) == 1
    group = recovery[0]
    joining = await api.client.get(
        f"/cohorts/{group['cohort_id']}/joining", headers=api.coordinator
    )  # so that a newcomer's confirmed place shows how to join
    assert joining.json()["platform"] == "Tencent Meeting (sample)", joining.text
    assert group["price"] == {"amount_minor": 90000, "currency": "CNY"}
    assert group["capacity"] == 8 and group["minimum_age"] == 18
    assert group["refund_policy"] == "no_refund" and group["safety_questions"]
    assert group["contact_email"] == "recovery-group@example.org"  # for concerns, feedback
    shanghai = ZoneInfo("Asia/Shanghai")
    starts = [
        datetime.fromisoformat(s["starts_at"]).astimezone(shanghai) for s in group["sessions"]
    ]
    assert len(starts) == 6
    assert {(s.weekday(), s.hour, s.minute) for s in starts} == {(2, 19, 30)}
    assert all(b - a == timedelta(weeks=1) for a, b in zip(starts, starts[1:], strict=False))

    sessions = [c for c in cohorts if c["kind"] == "facilitator_session"]
    assert len(sessions) == 3
    for c in sessions:
        (only,) = c["sessions"]
        start = datetime.fromisoformat(only["starts_at"]).astimezone(shanghai)
        assert (start.weekday(), start.hour, start.day <= 7) == (2, 19, True)
        assert c["price"] == {"amount_minor": 15000, "currency": "CNY"}
        assert c["scholarships_allowed"] is True
        asked = {q["id"]: q for q in c["intake_questions"]}  # shown on the sign-up form
        assert asked["work_with_groups"]["required"] and asked["to_know"]["sensitive"]
    days = sorted(
        datetime.fromisoformat(c["sessions"][0]["starts_at"]).astimezone(shanghai) for c in sessions
    )
    months = [d.year * 12 + d.month for d in days]
    assert [b - a for a, b in zip(months, months[1:], strict=False)] == [2, 2]

    (centre,) = [c for c in cohorts if c["label"].startswith("Centre group from")]
    starts = [
        datetime.fromisoformat(s["starts_at"]).astimezone(shanghai) for s in centre["sessions"]
    ]
    assert len(starts) == 10 and {(s.weekday(), s.hour) for s in starts} == {(3, 19)}
    assert centre["safety_questions"] and centre["refund_policy"] == "no_refund"


async def test_sign_ups_interrupted_before_their_seat_step_are_finished_at_any_age(
    api, regdb
) -> None:
    """As if the process died between verifying the address and the ledger write:
    one a moment ago, one three days ago with the service down since (its mark, how
    far back every registration is known to be on its ledger, is from before). A
    sign-up never verified is left alone."""
    import uuid

    from registration.domain.programs import Application
    from registration.service import ADMISSION_MARK
    from registration.settings import RegistrationSettings
    from registration.store import Sealer, cohort_key

    from shared.security import BlindIndexer, FieldCipher, hash_access_token

    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    settings = RegistrationSettings()  # the service runs on the same development keys
    sealer = Sealer(FieldCipher.from_settings(settings), BlindIndexer.from_settings(settings))
    now = datetime.now(UTC)
    await regdb.reconciler.update_one(
        {"_id": ADMISSION_MARK}, {"$set": {"checked_until": now - timedelta(days=4)}}, upsert=True
    )
    orphans = []
    ages = ((7, timedelta(seconds=45)), (8, timedelta(days=3)), (9, timedelta(seconds=45)))
    for n, age in ages:  # RECONCILE_AFTER_S 30
        token = f"interrupted-sign-up-token-{n}"
        registration_id = str(uuid.uuid4())
        doc = sealer.registration_doc(
            registration_id=registration_id,
            cohort_id=cohort_id,
            program_id=program_id,
            application=Application.model_validate(application(n)),
            flagged=False,
            access_token_hash=hash_access_token(token),
            now=now - age,
            verify_by=now - age + timedelta(days=1),
            already_registered=False,
        )
        if n != 9:  # verified, then the crash
            doc["verified_at"] = now - age
            doc["dedupe_key"] = cohort_key(cohort_id, doc["email_index"])
        await regdb.registrations.insert_one(doc)
        orphans.append({"registration_id": registration_id, "access_token": token})
    unverified = orphans.pop()
    assert (await api.status(orphans[0]))["status"] == "submitted"
    for mine in orphans:
        await wait_status(api, mine, "pending_review", timeout=20)
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    assert cohort["seats_taken"] == 2
    assert (await api.status(unverified))["status"] == "unverified", "never admitted unverified"

    async def mark_moved_past_them() -> bool:
        mark = await regdb.reconciler.find_one({"_id": ADMISSION_MARK})
        assert mark["checked_until"] > now - timedelta(seconds=45)
        return True

    await eventually(mark_moved_past_them, timeout=20, what="the mark moved past the orphans")


async def test_a_declined_consent_releases_the_seat_and_the_roster_follows(api, system) -> None:
    program_id = await api.program(capacity=1, approval_required=False)
    cohort_id = await api.cohort(program_id)
    holder = await api.signed_up(cohort_id, 1)
    first_waiting = await api.signed_up(cohort_id, 2)
    second_waiting = await api.signed_up(cohort_id, 3)

    roster = (await api.client.get(f"/cohorts/{cohort_id}/roster", headers=api.coordinator)).json()
    assert [s["registration_id"] for s in roster["seats"]] == [holder["registration_id"]]
    assert roster["seats"][0]["name"] == f"Applicant 1 {CANARY}"  # coordinators see who
    waitlist = (
        await api.client.get(f"/cohorts/{cohort_id}/waitlist", headers=api.coordinator)
    ).json()["waitlist"]
    assert [(w["registration_id"], w["waitlist_position"]) for w in waitlist] == [
        (first_waiting["registration_id"], 1),
        (second_waiting["registration_id"], 2),
    ]

    await system.publish(ev.ConsentDeclined(registration_id=holder["registration_id"]))
    await wait_status(api, holder, "withdrawn")
    await wait_status(api, first_waiting, "offered")
    assert (await api.status(second_waiting))["waitlist_position"] == 1


async def test_coordinators_edit_programs_and_cohort_windows(api) -> None:
    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    edited = {**RECOVERY_GROUP, "price": {"amount_minor": 80000, "currency": "CNY"}}
    r = await api.client.put(f"/programs/{program_id}", json=edited, headers=api.coordinator)
    assert r.status_code == 200 and r.json()["price"]["amount_minor"] == 80000
    bad = await api.client.put(
        f"/programs/{program_id}", json={**edited, "capacity": 0}, headers=api.coordinator
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "capacity"
    closes = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    r = await api.client.patch(
        f"/cohorts/{cohort_id}", json={"registration_closes_at": closes}, headers=api.coordinator
    )
    assert r.status_code == 200
    inverted = await api.client.patch(
        f"/cohorts/{cohort_id}",
        json={"registration_closes_at": "2000-01-01T00:00:00+00:00"},
        headers=api.coordinator,
    )
    assert inverted.status_code == 422
    assert inverted.json()["errors"][0]["field"] == "registration_closes_at"
    await asyncio.sleep(2.1)  # past the service's short settings cache
    listed = (await api.client.get(f"/cohorts/{cohort_id}")).json()
    assert listed["price"]["amount_minor"] == 80000
    assert datetime.fromisoformat(listed["registration_closes_at"]) == datetime.fromisoformat(
        closes
    ).replace(microsecond=datetime.fromisoformat(closes).microsecond // 1000 * 1000)


async def test_events_written_before_a_crash_are_published_after_restart_once(
    mongodb_url, rabbitmq_url, tmp_path_factory, mongo_client
) -> None:
    """SIGKILL right after the write: the next process's relay publishes it, once.

    The dead process may still hold its claim on the cohort's outbox; the next one
    waits for that claim to run out (5 s here, OUTBOX_CLAIM_S).
    """
    s = start_system(
        mongodb_url, rabbitmq_url, tmp_path_factory.mktemp("crash"), OUTBOX_CLAIM_S="5"
    )
    try:
        await s.subscribe_public()
        async with httpx.AsyncClient(base_url=s.processes[0].url, timeout=30) as c:
            api = RegistrationApi(c, s)
            program_id = await api.program(capacity=1)
            cohort_id = await api.cohort(program_id)
            await api.signed_up(cohort_id, 1)
        s.processes[0].kill()
        # What a process that died between its write and its publish leaves behind.
        envelope = ev.make_envelope(
            ev.EnrollmentWaitlisted(
                registration_id="r-crash",
                cohort_id=cohort_id,
                program_id=program_id,
                occurred_at=datetime.now(UTC),
                position=1,
            ),
            source="holdspace/registration",
            correlation_id="r-crash",
        )
        cohorts = mongo_client[s.db_name].cohorts
        cohort = await cohorts.find_one({"_id": cohort_id})
        await cohorts.update_one(
            {"_id": cohort_id},
            {
                "$set": {
                    "outbox": [*cohort["outbox"], envelope.model_dump(mode="json")],
                    "has_outbox": True,
                }
            },
        )
        s.processes = [ServiceProcess("registration", s.env, s.processes[0].log_dir).start()]
        await eventually(
            lambda: [e for e in s.public_events if e["id"] == envelope.id],
            timeout=15,
            what="the stranded event published",
        )
        await asyncio.sleep(2)  # a second relay pass must not publish it again
        assert [e["id"] for e in s.public_events].count(envelope.id) == 1
        stored = await cohorts.find_one({"_id": cohort_id})
        assert stored["outbox"] == [] and stored["has_outbox"] is False
    finally:
        await s.close()


async def test_two_replicas_expire_a_hold_once(two_replicas, mongo_client) -> None:
    s = two_replicas
    published = await s.listen("internal", "registration.expired", "registration.seat_offered")
    async with httpx.AsyncClient(base_url=s.processes[0].url, timeout=30) as c:
        api = RegistrationApi(c, s)
        program_id = await api.program(capacity=1)
        cohort_id = await api.cohort(program_id, hold_seconds=1, offer_seconds=3600)
        holder = await api.signed_up(cohort_id, 1)
        waiting = await api.signed_up(cohort_id, 2)
        await wait_status(api, waiting, "offered", timeout=20)
    await asyncio.sleep(2)  # both replicas' due runners have polled several times since
    seen = [e["type"] for e in published if e["data"]["cohort_id"] == cohort_id]
    assert sorted(seen) == ["registration.expired", "registration.seat_offered"]
    cohort = await mongo_client[s.db_name].cohorts.find_one({"_id": cohort_id})
    assert cohort["entries"][holder["registration_id"]]["status"] == "expired"


async def test_joining_details_and_how_to_pay_over_http_and_the_database(api, regdb) -> None:
    program_id = await api.program()
    cohort_id = await api.cohort(program_id)
    joining = {"platform": "VooV Meeting", "url": "https://voov.example/j/1", "passcode": "8642"}
    bad = await api.client.put(
        f"/cohorts/{cohort_id}/joining",
        json={**joining, "url": "http://voov.example/j/1"},
        headers=api.coordinator,
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "url"
    put = await api.client.put(
        f"/cohorts/{cohort_id}/joining", json=joining, headers=api.coordinator
    )
    assert put.status_code == 200
    assert (await api.client.get(f"/cohorts/{cohort_id}/joining")).status_code == 401
    got = await api.client.get(f"/cohorts/{cohort_id}/joining", headers=api.coordinator)
    assert got.json() == joining
    stored = await regdb.cohorts.find_one({"_id": cohort_id})
    assert "8642" not in str(stored) and "voov" not in str(stored).lower()
    assert "joining" not in (await api.client.get(f"/cohorts/{cohort_id}")).text

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    qr = f"/programs/{program_id}/payment-qr"
    assert (await api.client.get(qr)).status_code == 404
    stored_qr = await api.client.put(
        qr, content=png, headers={**api.coordinator, "Content-Type": "image/png"}
    )
    assert stored_qr.status_code == 204
    shown = await api.client.get(qr)
    assert shown.content == png and shown.headers["content-type"] == "image/png"
    image = {**api.coordinator, "Content-Type": "image/png"}
    too_big = await api.client.put(qr, content=png * 300, headers=image)
    assert too_big.status_code == 422 and too_big.json()["errors"][0]["field"] == "qr"
    past_any_limit = await api.client.put(qr, content=png * 600, headers=image)
    assert past_any_limit.status_code == 413
    not_an_image = await api.client.put(qr, content=b"GIF89a" * 10, headers=image)
    assert not_an_image.status_code == 422 and not_an_image.json()["errors"][0]["field"] == "qr"
    assert (await api.client.get(qr)).content == png  # the refused image changed nothing
    words = {"zh": "微信支付", "en": "WeChat Pay"}
    await api.client.put(
        f"/programs/{program_id}/payment-instructions", json=words, headers=api.coordinator
    )
    how = await api.client.get(f"/programs/{program_id}/payment-instructions")
    assert how.json() == {**words, "qr": True}
    assert (await api.client.delete(qr, headers=api.coordinator)).status_code == 204
    assert (await api.client.get(qr)).status_code == 404


@pytest.fixture(scope="module")
async def limited(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[System]:
    s = start_system(
        mongodb_url,
        rabbitmq_url,
        tmp_path_factory.mktemp("limited"),
        SIGNUP_LIMIT_PER_CLIENT="10/minute",
        SIGNUP_LIMIT_PER_COHORT="30/minute",
    )
    yield s
    await s.close()


async def test_one_address_holds_at_most_one_place_in_a_cohort(api, regdb) -> None:
    """Seat hoarding by signing up again and again (matrix row 24, OWASP API6)."""
    cohort_id = await api.cohort(await api.program(capacity=3))
    held = await api.signed_up(cohort_id, 1, email="hoarder@example.org")
    assert held["status"] == "pending_review"
    for n in range(5):
        again = await api.sign_up(cohort_id, application(10 + n, email="hoarder@example.org"))
        assert again.status_code == 202  # the answer anyone gets: membership is never told
        # What reaches the address is a note, not a link: nothing to verify, no second hold.
        _, token = await api.link_for(cohort_id, "hoarder@example.org")
        assert token is None
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    assert len(cohort["entries"]) == 1 and cohort["seats_taken"] == 1, cohort["entries"]


async def test_a_hundred_rapid_sign_ups_from_one_client_hold_no_seat(limited, mongo_client):
    async with httpx.AsyncClient(base_url=limited.processes[0].url, timeout=30) as client:
        api = RegistrationApi(client)
        cohort_id = await api.cohort(await api.program(capacity=200), capacity=200)
        answers = [
            await api.sign_up(cohort_id, application(n, email=f"burst{n}@example.org"))
            for n in range(100)
        ]
        codes = [a.status_code for a in answers]
        assert codes.count(202) == 10 and codes.count(429) == 90
        refused = answers[-1]
        assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["content-type"].startswith("application/problem+json")
        cohort = await mongo_client[limited.db_name].cohorts.find_one({"_id": cohort_id})
        # Neither a refused sign-up nor an unverified one holds a seat.
        assert cohort["entries"] == {} and cohort["seats_taken"] == 0

        # Many clients at once (through the pages, which name each): the cohort's limit.
        by_client = [
            await client.post(
                f"/cohorts/{cohort_id}/registrations",
                json=application(n, email=f"many{n}@example.org"),
                headers={"Idempotency-Key": str(uuid.uuid4()), "X-Forwarded-For": f"10.0.0.{n}"},
            )
            for n in range(40)
        ]
        codes = [a.status_code for a in by_client]
        assert codes.count(202) == 30 - 10  # the cohort took 10 already this minute
        assert by_client[-1].json()["field"] == "cohort_id"


# Bodies meant to exhaust the server (matrix row 25, OWASP API4): refused within 1 s each,
# never a 5xx, and the process's memory does not grow by 50 MB over them all.
HOSTILE_BODIES = {
    "10 MB body": b'{"name": "' + b"x" * 10_000_000 + b'"}',
    "10,000-element array": json.dumps({**application(1), "safety_answers": [0] * 10_000}).encode(),
    "depth 1,000": b'{"a": ' * 1_000 + b"0" + b"}" * 1_000,
    "depth 1,000 of arrays": b"[" * 1_000 + b"]" * 1_000,
}


def _rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        * 1024
    )


async def test_hostile_bodies_are_refused_fast_and_memory_stays_put(api, system) -> None:
    cohort_id = await api.cohort(await api.program())
    pid = system.processes[0].process.pid
    rss_before = _rss_bytes(pid)
    slowest: dict[str, float] = {}
    for label, body in HOSTILE_BODIES.items():
        for attempt in range(5):
            began = time.monotonic()
            answer = await api.client.post(
                f"/cohorts/{cohort_id}/registrations",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"hostile-{attempt}",
                },
            )
            took = time.monotonic() - began
            slowest[label] = max(slowest.get(label, 0.0), took)
            assert answer.status_code in (413, 422), (label, answer.status_code, answer.text[:200])
    grew_mb = (_rss_bytes(pid) - rss_before) / 2**20
    print(f"row 25: slowest answers {slowest}; RSS grew {grew_mb:.1f} MB")
    assert max(slowest.values()) < 1.0, slowest
    assert grew_mb < 50, grew_mb
    assert (await api.client.get("/healthz")).status_code == 200


async def test_sessions_given_as_a_recurrence_rule_over_http(api) -> None:
    per_session = await api.program(sign_up_for="session", title=f"Facilitators {short_id()}")
    rule = {
        "rrule": "FREQ=MONTHLY;BYMONTH=5,7,9,11;BYDAY=+1WE;COUNT=4",
        "starts": "2031-05-07T19:00",
        "minutes": 90,
        "timezone": "Asia/Shanghai",
    }
    body = {**api.cohort_body(), "sessions": [], "recurrence": rule, "label": "Circle"}
    r = await api.client.post(
        f"/programs/{per_session}/cohorts", json=body, headers=api.coordinator
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["cohort_ids"]) == 4 and r.json()["label"] == "Circle · 2031-05-07"
    bad = await api.client.post(
        f"/programs/{per_session}/cohorts",
        json={**body, "recurrence": {**rule, "rrule": "FREQ=WEEKLY"}},
        headers=api.coordinator,
    )
    assert bad.status_code == 422 and "recurrence" in bad.text, bad.text
    cohorts = (await api.client.get("/cohorts")).json()
    assert len([c for c in cohorts if c["program_id"] == per_session]) == 4  # none more
