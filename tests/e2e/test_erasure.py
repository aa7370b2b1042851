"""An applicant erases their data: across the services, nothing personal is left.

The applicant signs up (name, email, chat handle, safety answers),
verifies the address, is approved, signs consent (typed name, user agent) and gets a
payment request; a coordinator marks the transfer with a note naming the payer. Before
the erasure each of these is readable by a coordinator (so the checks after are not
vacuous). After it, no service can show any of them, no document that names the
registration holds a sealed value, and none of them is in clear in any of the four
databases, the services' logs or the dead-letter queues.
"""

from __future__ import annotations

import asyncio
import json
import re

from bson import json_util

from shared import events as ev
from shared.security import Role
from shared.topology import SERVICES
from tests.e2e.harness import System
from tests.e2e.journey import WAIT_S, Applicant, Journey
from tests.integration.helpers_messaging import eventually
from tests.services import coordinator_headers

SECRETS = {
    "name": "Qiao Erasable-Xiaoyun",
    "email": "qiao.erasable.5521@example.org",
    "chat_handle": "wx-erasable-5521",
    "user_agent": "ErasableBrowser/5521",
    "evidence": "transfer from Qiao at Bank 5521",
    "why": "spoke with Qiao 5521 by phone, a good fit",
}
SEALED = re.compile(r"^v1\.[\w-]+\.[\w-]+\.[\w-]+$")


async def signed_up_and_verified(journey: Journey, a: Applicant) -> None:
    status = await journey.sign_up_one(a, chat_handle=SECRETS["chat_handle"])
    assert status == "pending_review"


async def what_coordinators_see(journey: Journey, a: Applicant, payment_id: str) -> str:
    s, rid, headers = journey.system, a.registration_id, journey.coordinator
    seen = [
        await journey.request(
            "GET", f"{s.url('registration')}/registrations/{rid}/record", headers=headers
        ),
        await journey.request(
            "GET", f"{s.url('consent')}/registrations/{rid}/consent/evidence", headers=headers
        ),
        await journey.request("GET", f"{s.url('payments')}/payments/{payment_id}", headers=headers),
    ]
    for r in seen:
        assert r.status_code == 200, r.text
    return "".join(r.text for r in seen)


async def every_secret_stored(journey: Journey) -> tuple[Applicant, dict]:
    """One applicant whose every secret is in some service: they sign up, are approved,
    sign consent and get a payment request a coordinator marks with a note. Each secret
    is then readable by a coordinator, so a check that it is gone is not vacuous.
    Returns the applicant and their payment request."""
    await journey.open_cohort()
    a = Applicant(n=1, name=SECRETS["name"], email=SECRETS["email"])
    await signed_up_and_verified(journey, a)
    await journey.approve([a], why=SECRETS["why"])
    await journey.sign_consents([a], user_agent=SECRETS["user_agent"])
    request = await journey.payment_request(a)
    r = await journey.request(
        "POST",
        f"{journey.system.url('payments')}/manual-confirmations",
        json={
            "reference": request["reference"],
            "amount_minor": request["amount"]["amount_minor"],
            "currency": request["amount"]["currency"],
            "evidence": SECRETS["evidence"],
        },
        headers=journey.coordinator,
    )
    assert r.status_code == 201, r.text
    before = await what_coordinators_see(journey, a, request["payment_id"])
    for field in SECRETS:
        assert SECRETS[field] in before, f"the {field} was not stored: the test would prove nothing"
    return a, request


async def exported(journey: Journey, a: Applicant) -> dict[str, str]:
    """Each service's part of the applicant's data export, as the pages ask for it."""
    s, rid = journey.system, a.registration_id
    parts = {}
    for service in SERVICES:
        auth = (
            {"Authorization": f"Bearer {a.token}"}
            if service == "registration"
            else coordinator_headers(Role.pages, subject=f"applicant:{rid}")
        )
        r = await journey.request(
            "GET", f"{s.url(service)}/registrations/{rid}/export", headers=auth
        )
        assert r.status_code == 200, (service, r.text)
        parts[service] = r.text
    return parts


async def documents_naming(system: System, rid: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for service in SERVICES:
        db = system.db(service)
        for name in await db.list_collection_names():
            for doc in await db[name].find().to_list():
                if rid in json_util.dumps(doc):
                    found.setdefault(f"{service}.{name}", []).append(doc)
    return found


def sealed_values(value, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in sealed_values(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in sealed_values(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and SEALED.match(value) else []


async def test_an_erasure_leaves_nothing_personal_in_any_service(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "erasure")
    a, request = await every_secret_stored(journey)
    rid = a.registration_id
    await eventually(
        lambda: system.sink.to(a.email), timeout=WAIT_S, what="an email to the applicant"
    )
    # Their data export holds what each service holds about them.
    export = await exported(journey, a)
    for service, fields in {
        "registration": ("name", "email", "chat_handle", "why"),
        "consent": ("user_agent",),
        "payments": ("evidence",),
        "notifications": ("name", "email", "chat_handle"),
    }.items():
        for field in fields:
            assert SECRETS[field] in export[service], (service, field)
    assert '"template"' in export["notifications"]  # the messages they were sent
    assert "acct_" not in "".join(export.values())  # staff acted as "coordinator"

    r = await journey.request(
        "POST",
        f"{system.url('registration')}/registrations/{rid}/erasure",
        headers={"Authorization": f"Bearer {a.token}"},
    )
    assert r.status_code == 202, r.text

    async def complete() -> dict:
        state = await journey.request(
            "GET",
            f"{system.url('registration')}/registrations/{rid}/erasure",
            headers={"Authorization": f"Bearer {a.token}"},
        )
        assert state.status_code == 200 and state.json()["complete"], state.text
        return state.json()

    state = await eventually(complete, timeout=WAIT_S, interval=0.3, what="erasure complete")
    assert set(state["services"]) == set(SERVICES)

    # The applicant left the group first; nothing of theirs is shown any more.
    mine = await journey.request(
        "GET",
        f"{system.url('registration')}/registrations/{rid}",
        headers={"Authorization": f"Bearer {a.token}"},
    )
    assert mine.json()["status"] == "withdrawn"
    after = await what_coordinators_see(journey, a, request["payment_id"])
    after += "".join((await exported(journey, a)).values())
    for field, secret in SECRETS.items():
        assert secret not in after, field

    async def nothing_sealed_left() -> dict[str, list[dict]]:
        docs = await documents_naming(system, rid)
        left = {
            f"{where} {d['_id']} {d.get('template', '')}": sealed_values(d)
            for where, ds in docs.items()
            for d in ds
        }
        assert not any(left.values()), {w: p for w, p in left.items() if p}
        return docs

    docs = await eventually(nothing_sealed_left, timeout=30, what="no sealed value left")
    assert "notifications.recipients" in docs  # the tombstone: later events are dropped
    assert "notifications.deliveries" not in docs and "notifications.delivery_log" not in docs

    stored = ""
    for service in SERVICES:
        db = system.db(service)
        for name in await db.list_collection_names():
            stored += json_util.dumps(await db[name].find().to_list())
    code, dead = await system.ops_json("dlq", "list", "notifications")
    everywhere = stored + system.logs() + json.dumps(dead)
    for field, secret in SECRETS.items():
        assert secret not in everywhere, field

    # Nor on the broker, before or after: personal events travelled sealed.
    submitted = system.spy.of("registration.submitted", {rid})
    assert submitted and all(s.sealed for s in submitted)
    assert submitted[0].data["contact"]["email"] == a.email  # what notifications opened
    on_the_wire = b"".join(system.spy.raw)
    for field in ("name", "email", "chat_handle", "user_agent"):
        assert SECRETS[field].encode() not in on_the_wire, field

    # Events about them still in flight arrive after the erasure, as redeliveries (the same
    # ids) and as late copies (new ids): nothing personal comes back, nothing is sent.
    mails_before = len(system.sink.to(a.email))
    about_them = [
        (s, raw)
        for s, raw in zip(list(system.spy.seen), list(system.spy.raw), strict=True)
        if s.type in ("registration.submitted", "registration.approved", "payment.requested")
        and s.data.get("registration_id") == rid
    ]
    assert about_them, "no event about them was seen: the check below would prove nothing"
    for seen, raw in about_them:
        for service in ("notifications", "payments"):
            await system.inject_raw(service, raw, seen.id)
        late = ev.EVENT_TYPES[seen.type].model_validate(seen.data)
        await system.inject_event("notifications", late)

    async def all_taken() -> bool:
        figures = await system.queue_figures()
        waiting = {q: n for q, (n, _) in figures.items() if n and ".dlq" not in q}
        assert not waiting, waiting
        return True

    await eventually(all_taken, timeout=30, what="the late events consumed")
    figures = await system.queue_figures()
    dead = {s: figures[system.dlq(s)][0] for s in ("notifications", "payments")}
    assert not any(dead.values()), f"late events dead-lettered: {dead}"
    await asyncio.sleep(2)  # sends are detached from the handler: give them a moment
    docs = await documents_naming(system, rid)
    assert "notifications.deliveries" not in docs, docs.get("notifications.deliveries")
    resurrected = {w: sealed_values(d) for w, ds in docs.items() for d in ds if sealed_values(d)}
    assert not resurrected, resurrected
    assert len(system.sink.to(a.email)) == mails_before, "a message went to an erased person"
