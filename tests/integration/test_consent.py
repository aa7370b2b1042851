"""The consent service as real processes (two replicas) with the registration service.

Both run under uvicorn against the real broker and database. The tests sign over
HTTP, publish the registration events the registration service would (or let it
publish them), listen to consent.* on the internal exchange as the other services
would, and read and edit consent's database to check (and tamper with) what it keeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from consent import seed as consent_seed
from consent.audit import verify_database
from consent.domain import chain
from consent.settings import DEV_CONSENT_CHAIN_KEY

from shared import events as ev
from shared.security import Role, decode_key
from tests.bus import TestBus, opened
from tests.conftest import short_id
from tests.integration.helpers_messaging import eventually
from tests.integration.registration_api import RegistrationApi
from tests.services import ServiceProcess, coordinator_headers, service_env

REF = "recovery-group-consent"
PUBLIC_URL = "https://consent.test"
CHAIN_KEY = decode_key(DEV_CONSENT_CHAIN_KEY, setting="CONSENT_CHAIN_KEY")
REPORTS = Path(__file__).resolve().parents[2] / "var" / "reports"


class ConsentSystem(TestBus):
    """Two consent replicas, one registration service, a listener on consent.*."""

    def __init__(self, env: dict[str, str], consent: list[ServiceProcess], registration):
        super().__init__(env)
        self.consent = consent
        self.registration: ServiceProcess = registration
        self.events: list[ev.Envelope] = []
        self.typed_names: list[str] = []
        self.secrets: list[str] = []

    @property
    def db_name(self) -> str:
        return f"{self.env['HOLDSPACE_DB_PREFIX']}consent"

    async def listen_consent(self) -> None:
        self.events = await self.listen(
            "internal", "consent.#", parse=lambda body: ev.Envelope.model_validate(opened(body))
        )

    def of(self, event_type: str, rid: str) -> list[ev.Envelope]:
        return [e for e in self.events if e.type == event_type and e.data["registration_id"] == rid]

    async def one(self, event_type: str, rid: str, timeout: float = 15.0) -> ev.Envelope:
        found = await eventually(
            lambda: self.of(event_type, rid), timeout=timeout, what=f"{event_type} for {rid}"
        )
        return found[0]

    async def close(self) -> None:
        await self.close_bus()
        for process in [*self.consent, self.registration]:
            process.stop()


@pytest.fixture(scope="module")
async def system(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[ConsentSystem]:
    env = service_env(
        mongodb_url, rabbitmq_url, short_id(), CONSENT_PUBLIC_URL=PUBLIC_URL, PREFETCH="64"
    )
    logs = tmp_path_factory.mktemp("consent")
    consent = [ServiceProcess("consent", env, logs) for _ in range(2)]
    registration = ServiceProcess("registration", env, logs)
    # Started side by side: each start mostly waits for imports and the broker.
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in [*consent, registration]))
    except Exception:
        for process in [*consent, registration]:
            process.stop()
        raise
    s = ConsentSystem(env, consent, registration)
    await s.listen_consent()
    with httpx.Client(base_url=consent[0].url, headers=coordinator_headers(), timeout=30) as c:
        assert len(consent_seed.seed(c)) == len(consent_seed.FORMS) == 6
        assert consent_seed.seed(c) == []  # a second run adds nothing
    yield s
    await s.close()


@pytest.fixture
async def client(system: ConsentSystem) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.consent[0].url, timeout=30) as c:
        yield c


@pytest.fixture
def cdb(system: ConsentSystem, mongo_client):
    return mongo_client[system.db_name]


def token_of(requested: ev.Envelope) -> str:
    url = requested.data["signing_url"]
    assert url.startswith(f"{PUBLIC_URL}/consents/")
    return url.rsplit("/", 1)[1]


async def approve(
    system: ConsentSystem, *, ref: str = REF, hold_s: float = 3600, **extra: Any
) -> tuple[str, str, ev.Envelope]:
    """Publish registration.approved as registration would; return id, token, the event."""
    rid = str(uuid.uuid4())
    approved = await system.publish(
        ev.RegistrationApproved(
            registration_id=rid,
            cohort_id="c-1",
            program_id="p-1",
            consent_form_ref=ref,
            price=ev.Money(amount_minor=90000, currency="CNY"),
            refundable=False,
            hold_expires_at=datetime.now(UTC) + timedelta(seconds=hold_s),
            **extra,
        )
    )
    requested = await system.one("consent.requested", rid)
    return rid, token_of(requested), approved


async def signature_for(
    client: httpx.AsyncClient, system: ConsentSystem, token: str, language: str = "en"
) -> dict[str, Any]:
    r = await client.get(f"/consents/{token}", params={"language": language})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    form = r.json()["form"]
    name = f"Typed Name {short_id()}"
    system.typed_names.append(name)
    system.secrets.append(token.rsplit(".", 1)[1])
    return {
        "text_sha256": form["text_sha256"],
        "typed_name": name,
        "acknowledged_clauses": [c["id"] for c in form["clauses"]],
        "agree_to_sign_electronically": True,
    }


async def signed(client, system, token: str) -> dict[str, Any]:
    body = await signature_for(client, system, token)
    r = await client.post(f"/consents/{token}/sign", json=body, headers={"User-Agent": "ua-test"})
    assert r.status_code == 200, r.text
    system.secrets.append(r.json()["withdrawal_token"])
    return {**r.json(), "typed_name": body["typed_name"]}


async def recorded(cdb, rid: str) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        doc = await cdb.requests.find_one({"_id": rid})
        assert doc["signatures"] and not doc["needs_record"], doc["status"]
        return doc

    return await eventually(check, timeout=15, what="signature anchored")


# --- across services ------------------------------------------------------------------


async def test_happy_path_approved_to_signed_moves_the_registration_on(system, client, cdb):
    async with httpx.AsyncClient(base_url=system.registration.url, timeout=30) as rc:
        reg = RegistrationApi(rc, system)
        program_id = await reg.program(consent_form_ref=REF)
        cohort_id = await reg.cohort(program_id)
        registration = await reg.signed_up(cohort_id, 1)
        rid = registration["registration_id"]
        r = await reg.coordinator_post(rid, "approve")
        assert r.status_code == 200 and r.json()["status"] == "awaiting_consent", r.text
        approved_at = datetime.now(UTC)

        requested = await system.one("consent.requested", rid)
        token = token_of(requested)
        # The link expires with the registration's hold (5 days by default).
        expires = datetime.fromisoformat(requested.data["expires_at"])
        assert expires > approved_at + timedelta(days=4)

        r = await client.get(f"/consents/{token}", headers={"Accept-Language": "zh-CN,zh"})
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["form"]["language"] == "zh" and shown["available_languages"] == ["en", "zh"]
        assert shown["form"]["form_id"] == f"{REF}.zh" and shown["form"]["version"] == 1
        assert "12356" in shown["form"]["body_markdown"]  # crisis resources are in the text

        body = {
            "text_sha256": shown["form"]["text_sha256"],
            "typed_name": "林 Alias-Happy",
            "acknowledged_clauses": [c["id"] for c in shown["form"]["clauses"]],
            "agree_to_sign_electronically": True,
        }
        system.typed_names.append(body["typed_name"])
        r = await client.post(f"/consents/{token}/sign", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["form_id"] == f"{REF}.zh" and answer["form_version"] == 1

        signed_event = await system.one("consent.signed", rid)
        data = signed_event.data
        assert data["price"] == {"amount_minor": 90000, "currency": "CNY"}
        assert data["refundable"] is False and data["reconsent"] is False
        assert datetime.fromisoformat(data["hold_expires_at"]) == expires
        assert data["text_sha256"] == shown["form"]["text_sha256"]
        assert "Alias-Happy" not in signed_event.model_dump_json()

        async def moved(status: str):
            current = await reg.status(registration)
            assert current["status"] == status, current
            return current

        await eventually(lambda: moved("awaiting_payment"), timeout=15, what="awaiting_payment")

        # The evidence: text, record and chain check; the receipt prints it.
        await recorded(cdb, rid)
        coordinator = coordinator_headers()
        r = await client.get(f"/registrations/{rid}/consent/evidence", headers=coordinator)
        assert r.status_code == 200, r.text
        evidence = r.json()
        assert evidence["verified"] is True, evidence["checks"]
        assert evidence["record"]["typed_name"] == "林 Alias-Happy"
        assert evidence["record"]["clauses_acknowledged"] == body["acknowledged_clauses"]
        assert evidence["signed_text"]["text_sha256"] == body["text_sha256"]
        r = await client.get(f"/registrations/{rid}/consent/receipt", headers=coordinator)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "林 Alias-Happy" in r.text and body["text_sha256"] in r.text
        assert "Verified:" in r.text and "六周线上康复小组" in r.text

        # Withdrawal with the token given at signing; registration treats it as one.
        r = await client.post(
            f"/consents/{rid}/withdraw", headers={"Authorization": "Bearer wrong-token"}
        )
        assert r.status_code == 404
        assert (await client.post(f"/consents/{rid}/withdraw")).status_code == 401
        bearer = {"Authorization": f"Bearer {answer['withdrawal_token']}"}
        r = await client.post(f"/consents/{rid}/withdraw", headers=bearer)
        assert r.status_code == 200 and r.json()["status"] == "withdrawn"
        await system.one("consent.withdrawn", rid)
        await eventually(lambda: moved("withdrawn"), timeout=15, what="withdrawn")
        assert (await client.post(f"/consents/{rid}/withdraw", headers=bearer)).status_code == 200
        await asyncio.sleep(1.5)
        assert len(system.of("consent.withdrawn", rid)) == 1


# --- refusals ---------------------------------------------------------------------------


async def test_bad_signatures_are_refused_and_nothing_is_recorded(system, client, cdb):
    rid, token, _ = await approve(system)
    body = await signature_for(client, system, token)
    before = await cdb.signatures.count_documents({})

    forged = f"{rid}.{'A' * 43}"
    for bad_token in (forged, "not-a-token", f"{uuid.uuid4()}.{'B' * 43}"):
        r = await client.post(f"/consents/{bad_token}/sign", json=body)
        assert r.status_code == 404 and r.json()["field"] == "token", r.text
        assert (await client.get(f"/consents/{bad_token}")).status_code == 404

    r = await client.post(f"/consents/{token}/sign", json={**body, "text_sha256": "ab" * 32})
    assert r.status_code == 409 and r.json()["field"] == "text_sha256", r.text

    partial = {**body, "acknowledged_clauses": body["acknowledged_clauses"][1:]}
    r = await client.post(f"/consents/{token}/sign", json=partial)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "acknowledged_clauses"
    assert body["acknowledged_clauses"][0] in r.json()["errors"][0]["message"]

    r = await client.post(
        f"/consents/{token}/sign", json={**body, "agree_to_sign_electronically": False}
    )
    assert r.status_code == 422 and "agree_to_sign_electronically" in r.json()["detail"]
    r = await client.post(f"/consents/{token}/sign", json={**body, "role": "coordinator"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "role"

    doc = await cdb.requests.find_one({"_id": rid})
    assert doc["status"] == "open" and doc["pending_records"] == []
    assert await cdb.signatures.count_documents({}) == before
    assert system.of("consent.signed", rid) == []

    # The right signature works once; the same link again is refused.
    r = await client.post(f"/consents/{token}/sign", json=body)
    assert r.status_code == 200, r.text
    await recorded(cdb, rid)
    r = await client.post(f"/consents/{token}/sign", json=body)
    assert r.status_code == 409 and "already used" in r.json()["detail"]
    assert (await client.get(f"/consents/{token}")).status_code == 409
    await asyncio.sleep(1.2)
    assert len(system.of("consent.signed", rid)) == 1
    assert len((await cdb.requests.find_one({"_id": rid}))["signatures"]) == 1


async def test_an_expired_link_is_refused_and_consent_expired_is_published(system, client, cdb):
    rid, token, _ = await approve(system, hold_s=1.5)
    body = await signature_for(client, system, token)
    await system.one("consent.expired", rid, timeout=10)
    before = await cdb.signatures.count_documents({})
    r = await client.post(f"/consents/{token}/sign", json=body)
    assert r.status_code == 410 and "expired" in r.json()["detail"], r.text
    assert (await client.get(f"/consents/{token}")).status_code == 410
    assert (await cdb.requests.find_one({"_id": rid}))["status"] == "expired"
    assert await cdb.signatures.count_documents({}) == before
    assert system.of("consent.signed", rid) == []


async def test_declining_publishes_consent_declined(system, client):
    rid, token, _ = await approve(system)
    r = await client.post(f"/consents/{token}/decline")
    assert r.status_code == 200 and r.json()["status"] == "declined"
    await system.one("consent.declined", rid)
    assert (await client.post(f"/consents/{token}/decline")).status_code == 409


# --- exactly once ---------------------------------------------------------------------


async def test_the_same_approval_twice_makes_one_request_and_one_consent_requested(system, cdb):
    rid = str(uuid.uuid4())
    approved = ev.make_envelope(
        ev.RegistrationApproved(
            registration_id=rid,
            cohort_id="c-1",
            program_id="p-1",
            consent_form_ref=REF,
            hold_expires_at=datetime.now(UTC) + timedelta(hours=1),
        ),
        source="urn:holdspace:test",
        correlation_id=rid,
    )
    await asyncio.gather(*(system.publish(envelope=approved) for _ in range(3)))
    # A registration withdrawn before its approval reaches consent gets no link later.
    late = str(uuid.uuid4())
    closed = ev.RegistrationWithdrawn(registration_id=late, cohort_id="c-1", previous_status="x")
    await system.publish(closed)
    await eventually(lambda: cdb.requests.find_one({"_id": late}), what="tombstone")
    await system.publish(
        ev.RegistrationApproved(
            registration_id=late, cohort_id="c-1", program_id="p-1", consent_form_ref=REF
        )
    )
    await system.one("consent.requested", rid)
    await asyncio.sleep(2.5)  # outbox poll 1 s: a second event would be out by now
    assert len(system.of("consent.requested", rid)) == 1
    assert await cdb.requests.count_documents({"_id": rid}) == 1
    assert system.of("consent.requested", late) == []
    assert (await cdb.requests.find_one({"_id": late}))["status"] == "cancelled"


async def test_a_closed_registration_cancels_the_open_link_quietly(system, client, cdb):
    rid, token, _ = await approve(system)
    await system.publish(
        ev.RegistrationExpired(registration_id=rid, cohort_id="c-1", previous_status="x")
    )

    async def cancelled() -> bool:
        return (await cdb.requests.find_one({"_id": rid}))["status"] == "cancelled"

    await eventually(cancelled, what="cancelled")
    assert (await client.get(f"/consents/{token}")).status_code == 410
    await asyncio.sleep(1.2)
    assert [e.type for e in system.events if e.data["registration_id"] == rid] == [
        "consent.requested"
    ]


# --- the chain --------------------------------------------------------------------------


def run_verify(system: ConsentSystem) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "consent.verify"],
        env={**system.env, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_concurrent_signings_on_two_replicas_form_one_unbroken_chain(system, cdb):
    n = 40
    approvals = await asyncio.gather(*(approve(system) for _ in range(n)))
    urls = [p.url for p in system.consent]
    async with httpx.AsyncClient(timeout=60) as c:
        probe = await c.get(f"{urls[0]}/consents/{approvals[0][1]}", params={"language": "en"})
        form = probe.json()["form"]

        async def sign(i: int, token: str) -> httpx.Response:
            name = f"Concurrent {i} {short_id()}"
            system.typed_names.append(name)
            body = {
                "text_sha256": form["text_sha256"],
                "typed_name": name,
                "acknowledged_clauses": [cl["id"] for cl in form["clauses"]],
                "agree_to_sign_electronically": True,
            }
            return await c.post(f"{urls[i % 2]}/consents/{token}/sign", json=body)

        started = time.perf_counter()
        answers = await asyncio.gather(*(sign(i, t) for i, (_, t, _) in enumerate(approvals)))
        wall = time.perf_counter() - started
    assert [a.status_code for a in answers] == [200] * n, [a.text for a in answers][:3]
    anchors = [(await recorded(cdb, rid))["signatures"][0] for rid, _, _ in approvals]
    assert len({a["seq"] for a in anchors}) == n
    report = await verify_database(cdb.client[system.db_name], CHAIN_KEY)
    assert report.ok, report.as_dict()
    total = await cdb.signatures.count_documents({})
    assert report.chain.records == total and report.chain.head_seq == total
    assert report.broken_anchors == [] and report.pending_records == 0
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "consent-concurrent-signing.json").write_text(
        json.dumps({"signatures": n, "replicas": 2, "wall_s": round(wall, 3), "chain": total})
    )


async def test_tampering_with_a_record_is_found_by_verify(system, client, cdb):
    rid, token, _ = await approve(system)
    await signed(client, system, token)
    doc = await recorded(cdb, rid)
    seq = doc["signatures"][0]["seq"]
    key = f"{seq:012d}"
    original = await cdb.signatures.find_one({"_id": key})
    database = cdb.client[system.db_name]
    assert (await verify_database(database, CHAIN_KEY)).ok

    try:
        # An edit of what was signed (the version), and a swap of the sealed name.
        await cdb.signatures.update_one({"_id": key}, {"$set": {"body.form_version": 2}})
        result = run_verify(system)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"BROKEN at record #{seq}:" in result.stdout
        assert "does not match its hash" in result.stdout
        r = await client.get(
            f"/registrations/{rid}/consent/evidence", headers=coordinator_headers()
        )
        assert r.json()["verified"] is False

        await cdb.signatures.replace_one({"_id": key}, original)
        other = {**original["personal"], "typed_name": original["personal"]["ip"]}
        await cdb.signatures.update_one({"_id": key}, {"$set": {"personal": other}})
        report = await verify_database(database, CHAIN_KEY)
        assert report.chain.broken.seq == seq and "personal fields" in report.chain.broken.reason
        # A record replaced by a consistent one without the key: its MAC, and its anchor.
        forged = chain.make_record(
            seq,
            original["prev_hash"],
            {**original["body"], "form_version": 9},
            original["personal"],
            None,
        )
        await cdb.signatures.replace_one({"_id": key}, forged)
        report = await verify_database(database, CHAIN_KEY)
        assert report.chain.broken.seq == seq and "MAC" in report.chain.broken.reason
        assert {"registration_id": rid, "seq": seq, "reason": "record replaced"} in (
            report.broken_anchors
        )
    finally:
        await cdb.signatures.replace_one({"_id": key}, original)
    result = run_verify(system)
    assert result.returncode == 0, result.stdout
    assert "chain ok" in result.stdout


# --- re-consent --------------------------------------------------------------------------


async def test_a_new_version_asks_unconfirmed_signers_to_sign_again(system, client, cdb):
    coordinator = coordinator_headers()
    ref = f"test-form-{short_id()}"
    spec = {
        "ref": ref,
        "language": "en",
        "title": "Test agreement",
        "body_markdown": "Version one.",
        "clauses": [{"id": "rules", "text": "I follow the rules."}],
        "publish": True,
    }
    r = await client.post("/forms", json=spec, headers=coordinator)
    assert r.status_code == 201 and r.json()["current_version"] == 1, r.text
    form_id = r.json()["form_id"]
    assert (await client.post("/forms", json=spec, headers=coordinator)).status_code == 409

    (open_rid, open_token, _), (done_rid, done_token, _) = await asyncio.gather(
        approve(system, ref=ref), approve(system, ref=ref)
    )
    first = await signed(client, system, open_token)
    await signed(client, system, done_token)
    await system.publish(
        ev.EnrollmentConfirmed(
            registration_id=done_rid,
            cohort_id="c-1",
            program_id="p-1",
            occurred_at=datetime.now(UTC),
        )
    )

    async def confirmed() -> bool:
        return (await cdb.requests.find_one({"_id": done_rid}))["confirmed"]

    await eventually(confirmed, what="confirmation recorded")

    draft = {k: spec[k] for k in ("title", "clauses")} | {"body_markdown": "Version two."}
    r = await client.put(f"/forms/{form_id}/draft", json=draft, headers=coordinator)
    assert r.status_code == 200 and r.json()["current_version"] == 1
    r = await client.post(f"/forms/{form_id}/publish", headers=coordinator)
    assert r.status_code == 200 and r.json()["current_version"] == 2
    r = await client.post(f"/forms/{form_id}/publish", headers=coordinator)
    assert r.status_code == 409 and r.json()["field"] == "draft"

    renewed = await eventually(
        lambda: [e for e in system.of("consent.requested", open_rid) if e.data["reconsent"]],
        timeout=15,
        what="re-consent request",
    )
    new_token = token_of(renewed[0])
    assert new_token != open_token
    shown = (await client.get(f"/consents/{new_token}")).json()
    assert shown["reconsent"] is True and shown["form"]["version"] == 2
    stale = {
        "text_sha256": first["text_sha256"],
        "typed_name": "Reconsent Name",
        "acknowledged_clauses": ["rules"],
        "agree_to_sign_electronically": True,
    }
    system.typed_names.append(stale["typed_name"])
    r = await client.post(f"/consents/{new_token}/sign", json=stale)
    assert r.status_code == 409 and r.json()["field"] == "text_sha256"
    fresh = {**stale, "text_sha256": shown["form"]["text_sha256"]}
    r = await client.post(f"/consents/{new_token}/sign", json=fresh)
    assert r.status_code == 200 and r.json()["form_version"] == 2
    resigned = await eventually(
        lambda: [e for e in system.of("consent.signed", open_rid) if e.data["reconsent"]],
        what="re-consent signed",
    )
    assert resigned[0].data["form_version"] == 2
    # The confirmed participant keeps the signature, until a coordinator asks.
    assert [e for e in system.of("consent.requested", done_rid) if e.data["reconsent"]] == []
    r = await client.post(
        f"/forms/{form_id}/re-consent", json={"include_confirmed": True}, headers=coordinator
    )
    assert r.status_code == 202, r.text
    await eventually(
        lambda: [e for e in system.of("consent.requested", done_rid) if e.data["reconsent"]],
        timeout=15,
        what="re-consent of the confirmed participant",
    )
    doc = await recorded(cdb, open_rid)
    assert [s["form_version"] for s in doc["signatures"]] == [1, 2]


async def test_one_link_signed_at_once_on_both_replicas_signs_once(system, client, cdb):
    rid, token, _ = await approve(system)
    body = await signature_for(client, system, token)
    urls = [p.url for p in system.consent]
    async with httpx.AsyncClient(timeout=30) as c:
        answers = await asyncio.gather(
            *(c.post(f"{urls[i % 2]}/consents/{token}/sign", json=body) for i in range(8))
        )
    assert sorted(a.status_code for a in answers) == [200] + [409] * 7
    doc = await recorded(cdb, rid)
    assert len(doc["signatures"]) == 1
    assert (
        await cdb.signatures.count_documents({"signature_id": doc["signatures"][0]["signature_id"]})
        == 1
    )
    assert await cdb.due.count_documents({"registration_id": rid}) == 0
    await asyncio.sleep(1.2)
    assert len(system.of("consent.signed", rid)) == 1


# --- access and privacy -------------------------------------------------------------------


async def test_coordinator_endpoints_deny_by_default(client):
    paths = ["/forms", f"/forms/{REF}.en", "/registrations/x/consent/evidence"]
    for path in paths:
        assert (await client.get(path)).status_code == 401, path
        r = await client.get(path, headers=coordinator_headers(Role.operator))
        assert r.status_code == 403, path
    r = await client.get(f"/forms/{REF}.en", headers=coordinator_headers())
    assert r.status_code == 200 and r.json()["current_version"] == 1


async def test_no_typed_name_ip_or_token_in_clear_in_logs_or_database(system, cdb):
    assert system.typed_names and system.secrets
    logs = "".join(p.log_text() for p in system.consent)
    dump = json.dumps(
        [d async for d in cdb.signatures.find({})] + [d async for d in cdb.requests.find({})],
        default=str,
        ensure_ascii=False,
    )
    for text in (*system.typed_names, *system.secrets, "ua-test"):
        assert text not in logs, text
        assert text not in dump, text
    assert "127.0.0.1" not in dump  # the IP is sealed too
