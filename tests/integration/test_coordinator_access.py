"""Staff tokens, attacked against the five services running as real processes: a token
of another program's coordinator, a revoked token, a deactivated account's token and
forged tokens (wrong key, ``alg: none``, an expiry pushed out) are all refused.

Revocations travel as ``staff.access_revoked`` events (shared/revocation.py); here they
are published as an operator does, with ``ops token revoke``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from consent import seed as consent_seed

from shared import events as ev
from shared.security import Role, issue_token
from tests.bus import TestBus
from tests.conftest import short_id
from tests.integration.helpers_messaging import eventually
from tests.integration.registration_api import RECOVERY_GROUP, RegistrationApi
from tests.services import TEST_JWT_SECRET, ServiceProcess, coordinator_headers, service_env

# One coordinator route per service, read-only: where each service checks a token.
PROBES = {
    "registration": "/programs",
    "consent": "/forms",
    "payments": "/payments",
    "notifications": "/safety-alerts",
    "progress": "/programs/any-program/plan",
}


class Deployment:
    def __init__(self, env: dict[str, str], processes: dict[str, ServiceProcess]) -> None:
        self.env = env
        self.processes = processes

    def url(self, service: str) -> str:
        return self.processes[service].url

    async def answers(self, service: str, headers: dict[str, str]) -> int:
        async with httpx.AsyncClient(base_url=self.url(service), timeout=10) as client:
            return (await client.get(PROBES[service], headers=headers)).status_code

    def ops(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).with_name("ops")), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
async def deployment(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[Deployment]:
    env = service_env(mongodb_url, rabbitmq_url, short_id())
    logs = tmp_path_factory.mktemp("access")
    processes: dict[str, ServiceProcess] = {}
    try:
        for name in PROBES:
            processes[name] = ServiceProcess(name, env, logs).start()
        yield Deployment(env, processes)
    finally:
        for process in processes.values():
            process.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(subject: str, programs="*") -> str:
    return issue_token(
        TEST_JWT_SECRET, role=Role.coordinator, subject=subject, ttl_seconds=600, programs=programs
    )


async def test_a_coordinator_of_one_program_gets_nothing_of_another(deployment) -> None:
    bus = TestBus(deployment.env)
    async with httpx.AsyncClient(base_url=deployment.url("registration"), timeout=30) as client:
        lead = RegistrationApi(client, bus)
        program_a, program_b = await lead.program(), await lead.program()
        cohort_a = await lead.cohort(program_a)
        cohort_b = await lead.cohort(program_b)
        theirs = (await lead.signed_up(cohort_b, 1))["registration_id"]
        of_a = coordinator_headers(subject="acct_a", programs=[program_a])

        async def status(method: str, path: str, **kw) -> int:
            return (await client.request(method, path, headers=of_a, **kw)).status_code

        # Reads and changes of program B's data: each 404, as for an id that does not exist.
        refused = {
            ("GET", f"/registrations/{theirs}/record"): {},
            ("POST", f"/registrations/{theirs}/approve"): {},
            ("POST", f"/registrations/{theirs}/erase"): {},
            ("POST", f"/registrations/{theirs}/reject"): {"json": {"reason": "x"}},
            ("GET", f"/cohorts/{cohort_b}/registrations"): {},
            ("GET", f"/cohorts/{cohort_b}/roster"): {},
            ("GET", f"/cohorts/{cohort_b}/waitlist"): {},
            ("GET", f"/cohorts/{cohort_b}/joining"): {},
            ("PUT", f"/cohorts/{cohort_b}/composition"): {"json": {"composition": "mixed"}},
            ("POST", f"/cohorts/{cohort_b}/cancel"): {},
            ("PUT", f"/cohorts/{cohort_b}/capacity"): {"json": {"capacity": 3}},
            ("PUT", f"/cohorts/{cohort_b}/registration"): {"json": {"open": False}},
            ("PUT", f"/cohorts/{cohort_b}/sessions"): {
                "json": {"sessions": RegistrationApi.cohort_body()["sessions"]}
            },
            ("PATCH", f"/cohorts/{cohort_b}"): {"json": {"capacity": 3}},
            ("GET", f"/programs/{program_b}"): {},
            ("PUT", f"/programs/{program_b}/payment-instructions"): {"json": {"en": "x"}},
            ("POST", f"/programs/{program_b}/cohorts"): {"json": {}},
        }
        answers = {k: await status(*k, **kw) for k, kw in refused.items()}
        assert set(answers.values()) == {404}, answers
        missing = await status("GET", f"/registrations/{short_id()}/record")
        assert missing == 404  # the same answer as for an id nobody has
        # Nothing changed: B's registration is still waiting for review.
        record = await client.get(f"/registrations/{theirs}/record", headers=lead.coordinator)
        assert record.json()["status"] == "pending_review"
        # Its own program: allowed; the list of programs holds only it; no new programs.
        assert await status("GET", f"/cohorts/{cohort_a}/registrations") == 200
        listed = (await client.get("/programs", headers=of_a)).json()
        assert [p["program_id"] for p in listed] == [program_a]
        assert await status("POST", "/programs", json=RECOVERY_GROUP) == 403  # leads only
    # Progress: program B's plan is neither shown nor set.
    progress = deployment.url("progress")
    async with httpx.AsyncClient(base_url=progress, headers=of_a, timeout=30) as between:
        plan = {"based_on": "probe"}
        assert (await between.get(f"/programs/{program_b}/plan")).status_code == 404
        assert (await between.put(f"/programs/{program_b}/plan", json=plan)).status_code == 404
        assert (await between.put(f"/programs/{program_a}/plan", json=plan)).status_code == 200
    await bus.close_bus()


async def test_a_revoked_token_is_refused_by_every_service(deployment) -> None:
    token = token_for("acct_revoked_token")
    for service in PROBES:
        assert await deployment.answers(service, bearer(token)) == 200, service
    done = deployment.ops("token", "revoke", "-", stdin=token)
    assert done.returncode == 0, done.stderr

    async def all_refuse() -> bool:
        for service in PROBES:
            assert await deployment.answers(service, bearer(token)) == 401, service
        return True

    await eventually(all_refuse, timeout=10, what="the revocation reached every service")
    other = token_for("acct_revoked_token")  # another token of the same account stands
    for service in PROBES:
        assert await deployment.answers(service, bearer(other)) == 200, service


async def test_every_token_of_a_deactivated_account_is_refused_by_every_service(
    deployment,
) -> None:
    before = [token_for("acct_gone"), token_for("acct_gone", programs=["p-1"])]
    done = deployment.ops("token", "revoke", "--subject", "acct_gone")
    assert done.returncode == 0, done.stderr

    async def all_refuse() -> bool:
        for token in before:
            for service in PROBES:
                assert await deployment.answers(service, bearer(token)) == 401, service
        return True

    await eventually(all_refuse, timeout=10, what="the account's tokens refused everywhere")
    bystander = token_for("acct_still_here")
    for service in PROBES:
        assert await deployment.answers(service, bearer(bystander)) == 200, service


def _forged() -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {
        "iss": "holdspace",
        "aud": "holdspace",
        "sub": "acct_forger",
        "role": "coordinator",
        "programs": "*",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": short_id(),
    }
    wrong_key = jwt.encode(claims, "an-attackers-own-secret-0123456789-abcdef", algorithm="HS256")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    alg_none = f"{header}.{body}."
    # A real token, its expiry pushed out a year, the signature kept.
    real = token_for("acct_forger")
    head, payload, signature = real.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["exp"] += 365 * 24 * 3600
    stretched = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    long_lived = jwt.encode(
        {**claims, "exp": int((now + timedelta(days=30)).timestamp())},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    return {
        "wrong key": wrong_key,
        "alg none": alg_none,
        "expiry edited": f"{head}.{stretched}.{signature}",
        "signed, but living 30 days": long_lived,
    }


async def test_forged_tokens_are_refused_by_every_service(deployment) -> None:
    answers = {
        (kind, service): await deployment.answers(service, bearer(token))
        for kind, token in _forged().items()
        for service in PROBES
    }
    assert set(answers.values()) == {401}, answers


async def test_consent_and_safety_alerts_of_another_program_are_not_shown(deployment) -> None:
    """Consent records and safety alerts carry their program: a coordinator of another
    program gets 404 (as for a registration with none) and an alert list without them."""
    lead = coordinator_headers(subject="acct_lead")
    of_a = coordinator_headers(subject="acct_a", programs=["program-a"])
    bus = TestBus(deployment.env)
    with httpx.Client(base_url=deployment.url("consent"), headers=lead, timeout=30) as client:
        await asyncio.to_thread(consent_seed.seed, client)
    rid, flagged = str(uuid.uuid4()), str(uuid.uuid4())
    await bus.publish(
        ev.RegistrationApproved(
            registration_id=rid,
            cohort_id="cohort-b",
            program_id="program-b",
            consent_form_ref="recovery-group-consent",
            price=ev.Money(amount_minor=90000, currency="CNY"),
            refundable=False,
            hold_expires_at=datetime.now(UTC) + timedelta(days=5),
        )
    )
    await bus.publish(
        ev.RegistrationFlaggedForSafety(
            registration_id=flagged, cohort_id="cohort-b", program_id="program-b"
        )
    )
    await bus.close_bus()
    async with httpx.AsyncClient(timeout=30) as client:
        consent = f"{deployment.url('consent')}/registrations/{rid}/consent"
        alert = f"{deployment.url('notifications')}/safety-alerts/{flagged}"

        async def both_there() -> bool:
            for url in (consent, alert):
                r = await client.get(url, headers=lead)
                assert r.status_code == 200, (url, r.text)
            return True

        await eventually(both_there, timeout=30, what="the request and the alert")
        for url in (consent, f"{consent}/evidence", alert):
            assert (await client.get(url, headers=of_a)).status_code == 404, url
        ack = await client.post(f"{alert}/acknowledge", headers=of_a)
        assert ack.status_code == 404
        listed = await client.get(f"{deployment.url('notifications')}/safety-alerts", headers=of_a)
        assert flagged not in [a["registration_id"] for a in listed.json()]
        everyone = await client.get(
            f"{deployment.url('notifications')}/safety-alerts", headers=lead
        )
        assert flagged in [a["registration_id"] for a in everyone.json()]
        assert (await client.get(alert, headers=lead)).json()["acknowledged"] is None


async def test_payments_of_another_program_are_not_shown_nor_touched(deployment) -> None:
    """A payment case carries the program consent.signed names: a coordinator of another
    program gets 404 for it (read or act, as for a payment that does not exist) and
    lists without it; its own coordinators and leads see it."""
    lead = coordinator_headers(subject="acct_lead")
    of_a = coordinator_headers(subject="acct_a", programs=["program-a"])
    of_b = coordinator_headers(subject="acct_b", programs=["program-b"])
    rid = str(uuid.uuid4())
    bus = TestBus(deployment.env)
    await bus.publish(
        ev.ConsentSigned(
            registration_id=rid,
            program_id="program-b",
            form_id="f",
            form_version=1,
            text_sha256="0" * 64,
            signed_at=datetime.now(UTC),
            price=ev.Money(amount_minor=90000, currency="CNY"),
            hold_expires_at=datetime.now(UTC) + timedelta(days=5),
        )
    )
    await bus.close_bus()
    payments = deployment.url("payments")
    record = f"{payments}/registrations/{rid}/payment/record"
    async with httpx.AsyncClient(timeout=30) as client:

        async def requested() -> dict:
            r = await client.get(record, headers=lead)
            assert r.status_code == 200 and r.json().get("reference"), r.text
            return r.json()

        case = await eventually(requested, timeout=30, what="the payment request")
        assert case["program_id"] == "program-b"
        assert (await client.get(record, headers=of_b)).status_code == 200
        pid, ref = case["payment_id"], case["reference"]
        refused = [
            await client.get(record, headers=of_a),
            await client.get(f"{payments}/payments/{pid}", headers=of_a),
            await client.post(
                f"{payments}/payments/{pid}/fail", json={"reason_code": "x"}, headers=of_a
            ),
            await client.post(f"{payments}/payments/{pid}/refund-made", headers=of_a),
            await client.post(
                f"{payments}/manual-confirmations",
                json={"reference": ref, "amount_minor": 90000, "currency": "CNY"},
                headers=of_a,
            ),
            await client.post(
                f"{payments}/scholarships/{rid}/grant", json={"amount_due_minor": 0}, headers=of_a
            ),
            await client.post(f"{payments}/scholarships/{rid}/decline", headers=of_a),
        ]
        assert [r.status_code for r in refused] == [404] * len(refused), [r.text for r in refused]
        listed = await client.get(f"{payments}/payments", headers=of_a)
        assert rid not in [c["registration_id"] for c in listed.json()]
        theirs = await client.get(f"{payments}/payments", headers=of_b)
        assert rid in [c["registration_id"] for c in theirs.json()]
        # Nothing a refused call did stuck: still open, nothing marked.
        after = (await client.get(record, headers=lead)).json()
        assert after["status"] == case["status"] and after["manual"] == []

        # A cohort's scholarship budget names its program, and answers only to it.
        budget = f"{payments}/cohorts/cohort-{rid}/scholarship-budget"
        money = {"amount_minor": 45000, "currency": "CNY"}
        set_b = await client.put(budget, json={**money, "program_id": "program-b"}, headers=of_b)
        assert set_b.status_code == 200, set_b.text
        assert (await client.get(budget, headers=of_b)).json()["amount_minor"] == 45000
        assert (await client.get(budget, headers=of_a)).status_code == 404
        taken = await client.put(budget, json={**money, "program_id": "program-a"}, headers=of_a)
        assert taken.status_code == 404
        unnamed = await client.put(budget, json=money, headers=of_a)
        assert unnamed.status_code == 422 and "program_id" in unnamed.text
        assert (await client.get(budget, headers=lead)).json()["program_id"] == "program-b"
