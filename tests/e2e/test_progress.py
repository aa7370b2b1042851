"""Between sessions, through the APIs of the running services: three participants are
enrolled by the real journey (sign-up, approval, consent, payment) and progress opens
their spaces from enrollment.confirmed.

One takes the questionnaire twice and sees the change, marks homework with a private
note, ticks a milestone and gets one discreet email, shares with the facilitator and
stops; the facilitator sees feedback only once three answered; another answers a
safety item and a coordinator is alerted while they get the crisis lines; an erasure
leaves nothing of the first in progress.
"""

from __future__ import annotations

import json
from typing import Any

from bson import json_util
from progress.seed_plans import RECOVERY_PLAN

from shared.security import Role
from tests.e2e.harness import COORDINATOR_EMAIL, System
from tests.e2e.journey import WAIT_S, Applicant, Journey
from tests.integration.helpers_messaging import eventually
from tests.services import coordinator_headers

JOURNAL = "Private journal 7731: wrote to my brother"


def pages(a: Applicant) -> dict[str, str]:
    return coordinator_headers(Role.pages, subject=f"applicant:{a.registration_id}")


def answers(level: int, harm: int = 0) -> dict[str, int]:
    items = [i["id"] for i in RECOVERY_PLAN["questionnaires"][1]["items"]]
    return {i: (harm if i == "harm" else level) for i in items}


class Between:
    def __init__(self, journey: Journey) -> None:
        self.journey = journey
        self.url = journey.system.url("progress")

    async def call(self, method: str, path: str, a: Applicant | None, **kw: Any) -> Any:
        headers = pages(a) if a else self.journey.coordinator
        r = await self.journey.request(method, f"{self.url}{path}", headers=headers, **kw)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json() if r.content else None

    async def space(self, a: Applicant) -> dict[str, Any]:
        return await self.call("GET", f"/spaces/{a.registration_id}", a)


async def enrolled(journey: Journey, n: int) -> list[Applicant]:
    journey.applicants = journey.applicants[:n]
    await journey.open_cohort()
    for a in journey.applicants:
        assert await journey.sign_up_one(a) == "pending_review"
    await journey.approve(journey.applicants)
    await journey.sign_consents(journey.applicants)
    await journey.pay(journey.applicants, {})
    await journey.expect_enrolled(journey.applicants)
    return journey.applicants


async def test_between_sessions_from_enrollment_to_erasure(system: System, program_id: str) -> None:
    journey = Journey(system, program_id, "progress")
    between = Between(journey)
    await between.call("PUT", f"/programs/{program_id}/plan", None, json=RECOVERY_PLAN)
    lin, mei, bo = await enrolled(journey, 3)
    for a in (lin, mei, bo):
        await eventually(lambda a=a: between.space(a), timeout=WAIT_S, what="space opened")

    # The questionnaire twice: the change is there to see.
    rid = lin.registration_id
    for level in (3, 1):
        await between.call(
            "POST",
            f"/spaces/{rid}/responses",
            lin,
            json={"questionnaire_id": "weekly", "answers": answers(level)},
        )
    mine = await between.space(lin)
    assert [r["score"] for r in mine["responses"]] == [15, 5]
    assert [r["band"]["en"] for r in mine["responses"]][-1] == "A steadier stretch"

    # Homework with a private note, a milestone and its one discreet word.
    await between.call(
        "PUT", f"/spaces/{rid}/homework/1", lin, json={"done": True, "journal": JOURNAL}
    )
    for _ in range(2):  # ticked twice: one message
        await between.call("PUT", f"/spaces/{rid}/milestones/spoke", lin, json={"reached": True})
    mine = await between.space(lin)
    assert mine["homework"][0]["journal"] == JOURNAL and mine["homework"][0]["done_at"]
    assert [m["reached_at"] is not None for m in mine["milestones"]][:2] == [False, True]

    def milestone_mail() -> list:
        got = [r for r in system.sink.to(lin.email) if r.template == "milestone_reached"]
        assert got
        return got

    # Matrix row 21: Mei's real token on each of Lin's space routes opens nothing, the
    # same answer as a space that does not exist, and Lin's space is as it was.
    before = await between.space(lin)
    tries = [
        ("GET", "", None),
        ("POST", "/responses", {"questionnaire_id": "weekly", "answers": answers(2)}),
        ("PUT", "/homework/1", {"done": False, "journal": "not mine"}),
        ("PUT", "/milestones/spoke", {"reached": False}),
        ("PUT", "/sharing", {"milestones": True, "with_facilitator": True}),
        ("POST", "/peer-invitation", None),
        ("POST", "/peer-invitation/accept", {"code": "0000-0000-00"}),
        ("DELETE", "/peer", None),
        ("GET", "/shared-with-me", None),
        ("DELETE", "/shared-with-me", None),
        ("POST", "/feedback/1", {"helpful": 1, "safe": 1}),
    ]
    for method, tail, body in tries:
        for space in (rid, "no-such-registration"):
            r = await journey.request(
                method, f"{between.url}/spaces/{space}{tail}", headers=pages(mei), json=body
            )
            assert r.status_code == 404, (method, tail, space, r.status_code, r.text)
            assert JOURNAL not in r.text and lin.email not in r.text
    assert await between.space(lin) == before

    [word] = await eventually(milestone_mail, timeout=WAIT_S, what="the milestone's email")
    assert word.subject == "A step taken" and "Spoke in the group" in word.text

    # Shared with the facilitator, then not.
    shared_path = f"/cohorts/{journey.cohort_id}/shared"
    assert await between.call("GET", shared_path, None) == []
    await between.call(
        "PUT", f"/spaces/{rid}/sharing", lin, json={"milestones": True, "with_facilitator": True}
    )
    [seen] = await between.call("GET", shared_path, None)
    assert seen["registration_id"] == rid and [m["id"] for m in seen["milestones"]] == ["spoke"]
    assert "scores" not in seen and JOURNAL not in json.dumps(seen)
    await between.call("PUT", f"/spaces/{rid}/sharing", lin, json={})
    assert await between.call("GET", shared_path, None) == []

    # Feedback: nothing but a count until three answered.
    feedback_path = f"/cohorts/{journey.cohort_id}/feedback"
    for a, (helpful, safe) in zip((lin, mei), ((5, 4), (3, 4)), strict=True):
        await between.call(
            "POST",
            f"/spaces/{a.registration_id}/feedback/1",
            a,
            json={"helpful": helpful, "safe": safe},
        )
    assert await between.call("GET", feedback_path, None) == [
        {"session": 1, "answers": 2, "enough": False, "needed": 3}
    ]
    await between.call(
        "POST",
        f"/spaces/{bo.registration_id}/feedback/1",
        bo,
        json={"helpful": 1, "safe": 1, "comment": "too fast"},
    )
    [session] = await between.call("GET", feedback_path, None)
    assert (
        session["enough"]
        and session["helpful"]["mean"] == 3.0
        and session["comments"] == ["too fast"]
    )

    # A safety item answered: a coordinator is alerted, the participant gets the lines.
    await between.call(
        "POST",
        f"/spaces/{mei.registration_id}/responses",
        mei,
        json={"questionnaire_id": "weekly", "answers": answers(0, harm=2)},
    )

    def alerted() -> bool:
        to_coordinators = [r.template for r in system.sink.to(COORDINATOR_EMAIL)]
        to_mei = [r.template for r in system.sink.to(mei.email)]
        assert "coordinator_safety" in to_coordinators and "crisis_resources" in to_mei
        return True

    await eventually(alerted, timeout=WAIT_S, what="the safety answer reached a coordinator")

    # Erasure leaves nothing of Lin here but the tombstone that drops late events.
    r = await journey.request(
        "POST",
        f"{system.url('registration')}/registrations/{rid}/erasure",
        headers={"Authorization": f"Bearer {lin.token}"},
    )
    assert r.status_code == 202, r.text

    async def nothing_left() -> bool:
        db = system.db("progress")
        left = {
            name: [d["_id"] for d in await db[name].find().to_list() if rid in json_util.dumps(d)]
            for name in await db.list_collection_names()
        }
        assert {k: v for k, v in left.items() if v} == {"erasures": [rid]}, left
        return True

    await eventually(nothing_left, timeout=WAIT_S, what="progress erased")
    export = await between.call("GET", f"/registrations/{rid}/export", lin)
    assert export == {"space": None, "feedback": []}
    assert JOURNAL not in system.logs()


async def test_the_seed_command_gives_the_seeded_program_its_plan_once(
    system: System, program_id: str
) -> None:
    import asyncio
    import subprocess
    import sys

    def run_seed() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "progress.seed", "--url", system.url("progress")]
            + ["--registration-url", system.url("registration")],
            env=system.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    r = await system.http.put(
        f"{system.url('progress')}/programs/{program_id}/plan",
        json={"based_on": "nothing yet"},
        headers=coordinator_headers(),
    )
    assert r.status_code == 200, r.text  # as a program is before the seed
    assert "plans set: 1 (Six-week online recovery group)" in await asyncio.to_thread(run_seed)
    assert "plans set: 0" in await asyncio.to_thread(run_seed)  # a plan set is kept
    plan = (
        await system.http.get(
            f"{system.url('progress')}/programs/{program_id}/plan", headers=coordinator_headers()
        )
    ).json()
    assert [q["id"] for q in plan["questionnaires"]] == ["self-screening", "weekly"]
