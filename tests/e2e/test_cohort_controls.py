"""A coordinator's controls over a running cohort, end to end through every service, the
broker, mongo-java-server and the SMTP sink: each change is an event and reaches the
people it concerns.

One cohort of the recovery group lives through all of them: made smaller before anyone
signs up, two confirmed and paid, one waiting; the sessions change (every confirmed
participant gets a calendar that replaces theirs); the capacity grows (the seat goes to
the one waiting); registration closes and reopens; then the cohort is cancelled (everyone
told, money paid refunded as the program sets for cancellation).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from icalendar import Calendar

from tests.e2e.harness import System
from tests.e2e.journey import WAIT_S, Applicant, Journey, create_program
from tests.integration.helpers_messaging import eventually
from tests.integration.helpers_notifications import Received


def mail(journey: Journey, a: Applicant, template: str) -> list[Received]:
    return [r for r in journey.mail_of().get(a.email, []) if r.template == template]


async def wait_mail(journey: Journey, a: Applicant, template: str) -> Received:
    def sent() -> Received:
        found = mail(journey, a, template)
        assert found, f"no {template} to applicant {a.n} yet"
        return found[0]

    return await eventually(sent, timeout=WAIT_S, interval=0.2, what=f"{template} email")


def calendar_events(r: Received) -> list[Any]:
    ics = r.part("text/calendar")
    assert ics, f"the {r.template} email has no calendar"
    return list(Calendar.from_ical(ics).walk("VEVENT"))


class Cohort:
    def __init__(self, journey: Journey) -> None:
        self.journey = journey
        self.url = f"{journey.system.url('registration')}/cohorts/{journey.cohort_id}"

    async def put(self, what: str, body: dict[str, Any]) -> Any:
        j = self.journey
        return await j.request("PUT", f"{self.url}/{what}", json=body, headers=j.coordinator)

    async def cancel(self) -> Any:
        j = self.journey
        return await j.request("POST", f"{self.url}/cancel", headers=j.coordinator)

    async def status(self, a: Applicant) -> dict[str, Any]:
        r = await self.journey.request(
            "GET",
            f"{self.journey.system.url('registration')}/registrations/{a.registration_id}",
            headers={"Authorization": f"Bearer {a.token}"},
        )
        assert r.status_code == 200, r.text
        return r.json()


async def test_a_cohort_changed_and_cancelled_reaches_everyone_it_concerns(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "controls")
    journey.applicants = journey.applicants[:4]
    ann, bo, cy, dee = journey.applicants
    await journey.open_cohort()
    cohort = Cohort(journey)
    r = await cohort.put("capacity", {"capacity": 2})
    assert r.status_code == 200 and r.json()["capacity"] == 2, r.text
    joining = {
        "platform": "Tencent Meeting",
        "url": "https://meeting.example/j/1",
        "passcode": "8642",
    }
    r = await cohort.put("joining", joining)
    assert r.status_code == 200, r.text

    assert await journey.sign_up_one(ann) == "pending_review"
    assert await journey.sign_up_one(bo) == "pending_review"
    assert await journey.sign_up_one(cy) == "waitlisted"
    await journey.approve([ann, bo])
    await journey.sign_consents([ann, bo])
    await journey.pay([ann, bo], {})
    await journey.expect_enrolled([ann, bo])
    confirmation = await wait_mail(journey, ann, "confirmed")
    assert "8642" in confirmation.text and "https://meeting.example/j/1" in confirmation.text
    before = calendar_events(confirmation)
    assert len(before) == 6 and {int(e["sequence"]) for e in before} == {1}
    assert str(before[0]["location"]) == "Tencent Meeting"

    # --- the sessions change: a new calendar replaces each participant's entries ---
    first = datetime.fromisoformat(journey.sessions[0]["starts_at"])
    moved = [
        {
            "starts_at": (first + timedelta(days=1, weeks=w)).isoformat(),
            "ends_at": (first + timedelta(days=1, weeks=w, minutes=90)).isoformat(),
            "timezone": "Asia/Shanghai",
        }
        for w in range(5)  # one session fewer
    ]
    r = await cohort.put("sessions", {"sessions": moved})
    assert r.status_code == 200 and r.json()["sessions_sequence"] == 2, r.text
    bad = await cohort.put("sessions", {"sessions": []})
    assert bad.status_code == 422 and "sessions" in bad.text
    for a in (ann, bo):
        changed = await wait_mail(journey, a, "sessions_changed")
        assert changed.subject == "New dates for your group"
        after = calendar_events(changed)
        assert [str(e["uid"]) for e in after] == [str(e["uid"]) for e in before]
        assert [int(e["sequence"]) for e in after] == [2] * 6
        assert str(after[0]["url"]) == "https://meeting.example/j/1"
        assert [e.decoded("dtstart") for e in after[:5]] == [
            datetime.fromisoformat(s["starts_at"]) for s in moved
        ]
        assert str(after[5]["status"]) == "CANCELLED"
    assert not mail(journey, cy, "sessions_changed")  # only the confirmed are told

    # --- new joining details: every confirmed participant is sent them ---
    r = await cohort.put("joining", {**joining, "passcode": "9753"})
    assert r.status_code == 200, r.text
    for a in (ann, bo):
        details = await wait_mail(journey, a, "joining_changed")
        assert "9753" in details.text and "9753" not in details.subject + details.text[:80]
        assert {int(e["sequence"]) for e in calendar_events(details)} == {3}

    # --- a bigger cohort: the new seat goes to the one waiting ---
    low = await cohort.put("capacity", {"capacity": 1})
    assert low.status_code == 409, low.text
    r = await cohort.put("capacity", {"capacity": 3})
    assert r.status_code == 200 and r.json()["offered"] == 1, r.text
    await wait_mail(journey, cy, "seat_offered")
    assert (await cohort.status(cy))["status"] == "offered"

    # --- registration closed early, then reopened ---
    r = await cohort.put("registration", {"open": False})
    assert r.status_code == 200 and r.json()["registration_closed"] is True, r.text
    refused = await journey.request(
        "POST",
        f"{system.url('registration')}/cohorts/{journey.cohort_id}/registrations",
        json=journey.application(dee),
        headers={"Idempotency-Key": f"e2e-{journey.tag}-closed"},
    )
    assert refused.status_code == 409 and "cohort_id" in refused.text, refused.text
    r = await cohort.put("registration", {"open": True})
    assert r.status_code == 200 and r.json()["registration_closed"] is False
    assert await journey.sign_up_one(dee) == "waitlisted"

    # --- cancelled: everyone still in is told, the paid are refunded ---
    r = await cohort.cancel()
    assert r.status_code == 200 and r.json()["ended"] == 4, r.text
    again = await cohort.cancel()
    assert again.status_code == 200 and again.json()["ended"] == 0
    assert (await cohort.put("capacity", {"capacity": 5})).status_code == 409
    for a in (ann, bo, cy, dee):
        told = await wait_mail(journey, a, "cohort_cancelled")
        assert told.subject == "Your group will not take place"
        assert "refunded in full" in told.text  # the recovery group refunds a cancellation
        mine = await cohort.status(a)
        assert mine["status"] == "withdrawn" and mine["cohort_cancelled"] is True
    for a in (ann, bo):
        refund = await eventually(
            lambda a=a: system.spy.latest("payment.refund_due", a.registration_id),
            timeout=WAIT_S,
            what="the refund of a paid place in a cancelled cohort",
        )
        assert refund.data["reason_code"] == "withdrawn"
    cancelled = {
        e.data["registration_id"] for e in system.subscriber.of("enrollment.cancelled", journey.ids)
    }
    assert cancelled == {ann.registration_id, bo.registration_id}

    await asyncio.sleep(1)  # time for a second message to show up
    for a in (ann, bo, cy, dee):
        assert len(mail(journey, a, "cohort_cancelled")) == 1
    assert len(mail(journey, ann, "sessions_changed")) == 1
    assert len(mail(journey, ann, "joining_changed")) == 1
    assert not mail(journey, ann, "withdrawn")
    for a in (cy, dee):  # never confirmed: never told how to join
        assert not any("8642" in r.text or "9753" in r.text for r in journey.mail_of()[a.email])


async def test_a_moved_participant_is_told_and_followed_by_the_new_groups_changes(
    system: System, program_id: str
) -> None:
    before, after = Journey(system, program_id, "move-a"), Journey(system, program_id, "move-b")
    before.applicants = before.applicants[:1]
    (ann,) = before.applicants
    after.applicants = []
    await before.open_cohort()
    await after.open_cohort()
    assert await before.sign_up_one(ann) == "pending_review"
    await before.approve([ann])
    await before.sign_consents([ann])
    await before.pay([ann], {})
    await before.expect_enrolled([ann])

    move = f"{system.url('registration')}/registrations/{ann.registration_id}/move"
    for _ in range(2):  # asking again changes nothing
        r = await before.request(
            "POST", move, json={"cohort_id": after.cohort_id}, headers=before.coordinator
        )
        assert r.status_code == 200, r.text
        assert r.json()["cohort_id"] == after.cohort_id and r.json()["status"] == "confirmed"
    elsewhere = await create_program(system)
    r = await before.request(
        "POST",
        f"{system.url('registration')}/programs/{elsewhere}/cohorts",
        json={
            "sessions": after.sessions,
            "registration_opens_at": "2026-01-01T00:00:00+00:00",
            "registration_closes_at": "2036-01-01T00:00:00+00:00",
        },
        headers=before.coordinator,
    )
    assert r.status_code == 201, r.text
    other_program = await before.request(
        "POST", move, json={"cohort_id": r.json()["cohort_id"]}, headers=before.coordinator
    )
    assert other_program.status_code == 404 and "cohort_id" in other_program.text

    confirmed = await wait_mail(before, ann, "confirmed")  # the former group's entries
    held = {str(e["uid"]): int(e["sequence"]) for e in calendar_events(confirmed)}
    told = await wait_mail(before, ann, "moved")
    assert told.subject == "Your group has changed"
    events = calendar_events(told)
    live = [e for e in events if str(e.get("status", "")) != "CANCELLED"]
    gone = {str(e["uid"]): int(e["sequence"]) for e in events if e not in live}
    assert len(live) == 6 and all(str(e["uid"]).startswith(after.cohort_id) for e in live)
    # Every entry of the former group is cancelled by its own UID, one SEQUENCE higher.
    assert gone.keys() == held.keys() and all(u.startswith(before.cohort_id) for u in held)
    assert all(gone[u] > held[u] for u in held)
    public = {
        (e.type, e.data["cohort_id"])
        for e in system.subscriber.seen
        if e.data.get("registration_id") == ann.registration_id
    }
    assert ("enrollment.cancelled", before.cohort_id) in public
    assert ("enrollment.confirmed", after.cohort_id) in public
    rosters = {}
    for j in (before, after):
        r = await j.request(
            "GET",
            f"{system.url('registration')}/cohorts/{j.cohort_id}/roster",
            headers=j.coordinator,
        )
        rosters[j.label] = [s["registration_id"] for s in r.json()["seats"]]
    assert rosters == {"move-a": [], "move-b": [ann.registration_id]}

    # The new group's changes reach them: notifications moved them to its roster.
    moved = Cohort(after)
    sessions = [{**s, "starts_at": s["starts_at"].replace(":30:", ":45:")} for s in after.sessions]
    r = await moved.put("sessions", {"sessions": sessions})
    assert r.status_code == 200, r.text
    await wait_mail(before, ann, "sessions_changed")
    assert (await moved.status(ann))["status"] == "confirmed"
