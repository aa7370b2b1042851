"""Seed the three source programs, with upcoming dates: the six-week recovery group, the
facilitators' sessions and the counselling centre's recovery group.

    python -m registration.seed --url http://127.0.0.1:8001

Talks to a running registration service through its coordinator API (minting a
coordinator token from JWT_SECRET), so it works against any environment. Running
it again adds nothing that is already there.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import typer
from dateutil.rrule import rrulestr

from shared.seeding import lead_client, ok

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEDNESDAY = 2

CRISIS_RESOURCES = [
    {"name": "希望24热线 Hope 24 hotline", "contact": "400-161-9995"},
    {
        "name": "北京心理危机研究与干预中心 Beijing crisis intervention hotline",
        "contact": "010-82951332",
    },
    {"name": "Emergency / 急救", "contact": "120 / 110"},
]

RECOVERY_GROUP: dict[str, Any] = {
    "title": "Six-week online recovery group",
    "display_name": "Wednesday evening group",
    "kind": "recovery_group",
    "language": "en",  # held in English; Chinese readers get the translation below
    "facilitator": "Lead facilitator",
    # Where applicants write with questions, concerns or feedback: set your own.
    "contact_email": "recovery-group@example.org",
    "description": (
        "A closed group of at most eight adults meeting online for six weeks. "
        "Peer support with a trained facilitator; not therapy."
    ),
    "translation": {
        "title": "六周线上康复小组",
        "description": (
            "最多八位成年人的封闭小组，六周线上聚会。"
            "由受过训练的带领者陪伴的同伴支持，不是心理治疗。"
        ),
    },
    "price": {"amount_minor": 90000, "currency": "CNY"},
    "refund_policy": "no_refund",
    "minimum_age": 18,
    "capacity": 8,
    "gender_composition": "mixed",
    "approval_required": True,
    "scholarships_allowed": False,
    "safety_questions": [
        {
            "id": "self_harm",
            "text": "Are you currently having thoughts of harming yourself or ending your life?",
            "text_zh": "你目前是否有伤害自己或结束生命的想法？",
        },
        {
            "id": "unsafe_now",
            "text": "Are you in a situation right now in which you are not safe?",
            "text_zh": "你现在是否处于不安全的处境中？",
        },
    ],
    "crisis_resources": CRISIS_RESOURCES,
    "consent_form_ref": "recovery-group-consent",
}

FACILITATOR_SESSION: dict[str, Any] = {
    "title": "Facilitators' processing session",
    "display_name": "Facilitators' circle",
    "kind": "facilitator_session",
    "language": "zh",
    "facilitator": "Supervising facilitator",
    "contact_email": "facilitators@example.org",
    "description": (
        "A session for facilitators, therapists and coaches who work with groups, to "
        "process their own experience. It meets on the first Wednesday of May, July, "
        "September and November, 19:00-20:30 (Asia/Shanghai)."
    ),
    "price": {"amount_minor": 15000, "currency": "CNY"},
    "refund_policy": "no_refund",
    "minimum_age": 18,
    "capacity": 8,
    "gender_composition": "mixed",
    "approval_required": False,
    "sign_up_for": "session",  # each session a cohort of its own, signed up for alone
    "scholarships_allowed": True,
    "safety_questions": [],
    # The session is for people who work with groups: it asks how, and what to know.
    "intake_questions": [
        {
            "id": "work_with_groups",
            "text": "How do you work with groups?",
            "text_zh": "你以什么身份和团体工作？",
            "kind": "choice",
            "choices": [
                {"id": "facilitator", "text": "Group facilitator", "text_zh": "团体带领者"},
                {"id": "therapist", "text": "Therapist or counsellor", "text_zh": "咨询师或治疗师"},
                {"id": "coach", "text": "Coach", "text_zh": "教练"},
                {"id": "other", "text": "Other", "text_zh": "其他"},
            ],
            "required": True,
        },
        {
            "id": "to_know",
            "text": "Is there anything the facilitator should know before the session?",
            "text_zh": "在活动之前，有什么希望带领者知道的吗？",
            "kind": "text",
            "sensitive": True,
        },
    ],
    "crisis_resources": CRISIS_RESOURCES,
    "consent_form_ref": "facilitator-session-consent",
}

# The counselling centre's group: psycho-education and peer support in Chinese. Its
# organiser's own page was not at hand: the schedule, price, size and contact below are
# placeholders for the centre to set (the console edits every one of them).
COUNSELLING_GROUP: dict[str, Any] = {
    "title": "咨询中心康复小组",
    "display_name": "周四晚间小组",
    "kind": "recovery_group",
    "language": "zh",  # held in Chinese; English readers get the translation below
    "facilitator": "中心咨询师",
    "contact_email": "counselling-centre@example.org",
    "description": (
        "十周的小组：一步一步学习康复的知识，课后有练习，"
        "成员彼此督促，一路记下里程碑。由中心咨询师带领的同伴支持，不是个体治疗。"
    ),
    "translation": {
        "title": "Counselling centre recovery group",
        "description": (
            "A ten-week group: psycho-education on recovery step by step, homework between "
            "sessions, accountability with one another, and milestones along the way. Peer "
            "support led by a counsellor of the centre; not individual therapy."
        ),
    },
    "price": {"amount_minor": 120000, "currency": "CNY"},
    "refund_policy": "no_refund",
    "minimum_age": 18,
    "capacity": 8,
    "gender_composition": "mixed",
    "approval_required": True,
    "scholarships_allowed": False,
    "safety_questions": RECOVERY_GROUP["safety_questions"],
    "crisis_resources": CRISIS_RESOURCES,
    "consent_form_ref": "counselling-group-consent",
}
THURSDAY = 3


def next_weekday(after: date, weekday: int) -> date:
    return after + timedelta(days=(weekday - after.weekday()) % 7 or 7)


def session(day: date, start: time, minutes: int) -> dict[str, str]:
    starts = datetime.combine(day, start, SHANGHAI)
    return {
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(minutes=minutes)).isoformat(),
        "timezone": "Asia/Shanghai",
    }


def weekly_cohort(label: str, first: date, start: time, weeks: int) -> dict[str, Any]:
    """``weeks`` sessions of 90 minutes from ``first``; sign-up closes three days before."""
    return {
        "label": f"{label} {first.isoformat()}",
        "sessions": [session(first + timedelta(weeks=w), start, 90) for w in range(weeks)],
        "registration_opens_at": datetime.now(UTC).isoformat(),
        "registration_closes_at": datetime.combine(
            first - timedelta(days=3), time(23, 59), SHANGHAI
        ).isoformat(),
        "hold_seconds": 5 * 24 * 3600,
        "offer_seconds": 48 * 3600,
    }


def recovery_cohort(today: date) -> dict[str, Any]:
    first = next_weekday(today + timedelta(days=13), WEDNESDAY)
    return weekly_cohort("Starts", first, time(19, 30), 6)


def counselling_cohort(today: date) -> dict[str, Any]:
    first = next_weekday(today + timedelta(days=13), THURSDAY)
    return weekly_cohort("Centre group from", first, time(19, 0), 10)


# The facilitators' session meets on the first Wednesday of May, July, September and
# November, 19:00-20:30, as an RFC 5545 rule (the form a cohort's `recurrence` takes).
FACILITATOR_RRULE = "FREQ=MONTHLY;BYMONTH=5,7,9,11;BYDAY=+1WE"


def facilitator_dates(today: date, count: int = 3) -> list[date]:
    """The next ``count`` first Wednesdays of May, July, September and November, more
    than two days away (closer is too late to sign up)."""
    after = datetime.combine(today + timedelta(days=3), time())
    return [d.date() for d in islice(rrulestr(FACILITATOR_RRULE, dtstart=after), count)]


def facilitator_cohort(day: date) -> dict[str, Any]:
    return {
        "label": day.isoformat(),
        "sessions": [session(day, time(19, 0), 90)],
        "registration_opens_at": datetime.now(UTC).isoformat(),
        "registration_closes_at": datetime.combine(
            day - timedelta(days=1), time(23, 59), SHANGHAI
        ).isoformat(),
        "hold_seconds": 3 * 24 * 3600,
        "offer_seconds": 24 * 3600,
    }


# So that a confirmed place on a seeded cohort shows how joining looks; the coordinator
# replaces them on the group's console page.
SAMPLE_JOINING = {
    "platform": "Tencent Meeting (sample)",
    "url": "https://meeting.tencent.com/dm/holdspace-sample",
    "meeting_id": "000 000 000",
    "passcode": "000000",
    "notes": "Sample details from the seed: the coordinator sets the real ones.",
}


def seed(client: httpx.Client, today: date) -> dict[str, list[str]]:
    programs = {p["title"]: p for p in ok(client.get("/programs")).json()}
    existing = {c["label"] for c in ok(client.get("/cohorts")).json()}
    created: dict[str, list[str]] = {"programs": [], "cohorts": []}

    def program(spec: dict[str, Any]) -> str:
        if spec["title"] in programs:
            return programs[spec["title"]]["program_id"]
        created["programs"].append(spec["title"])
        return ok(client.post("/programs", json=spec)).json()["program_id"]

    def cohort(program_id: str, spec: dict[str, Any]) -> None:
        if spec["label"] in existing:
            return
        created["cohorts"].append(spec["label"])
        made = ok(client.post(f"/programs/{program_id}/cohorts", json=spec)).json()
        for cohort_id in made["cohort_ids"]:  # a new cohort only: never over real details
            ok(client.put(f"/cohorts/{cohort_id}/joining", json=SAMPLE_JOINING))

    cohort(program(RECOVERY_GROUP), recovery_cohort(today))
    cohort(program(COUNSELLING_GROUP), counselling_cohort(today))
    facilitators = program(FACILITATOR_SESSION)
    for day in facilitator_dates(today):
        cohort(facilitators, facilitator_cohort(day))
    listed = ok(client.get("/cohorts")).json()
    created["scholarship_cohorts"] = [
        (c["cohort_id"], facilitators) for c in listed if c["program_id"] == facilitators
    ]
    return created


# Each facilitators' session can give three full scholarships (its price is 150 CNY).
FACILITATOR_BUDGET = {"amount_minor": 3 * 15000, "currency": "CNY"}


def seed_budgets(payments: httpx.Client, cohorts: list[tuple[str, str]]) -> None:
    """The scholarship budget of each facilitators' session (cohort id, program id), set
    (again) in payments, which answers it only to that program's coordinators."""
    for cohort_id, program_id in cohorts:
        budget = {**FACILITATOR_BUDGET, "program_id": program_id}
        ok(payments.put(f"/cohorts/{cohort_id}/scholarship-budget", json=budget))


def main(
    url: str = typer.Option("http://127.0.0.1:8001", help="registration service base URL"),
    payments_url: str = typer.Option(
        "http://127.0.0.1:8003", help="payments service base URL (scholarship budgets)"
    ),
    budgets: bool = typer.Option(True, help="Set the facilitators' scholarship budgets."),
) -> None:
    with lead_client(url) as client:
        created = seed(client, datetime.now(SHANGHAI).date())
    typer.echo(
        f"seeded: {len(created['programs'])} programs, {len(created['cohorts'])} cohorts "
        f"({', '.join(created['cohorts']) or 'all present already'})"
    )
    if budgets:
        with lead_client(payments_url) as payments:
            seed_budgets(payments, created["scholarship_cohorts"])
        typer.echo(
            f"scholarship budgets: {len(created['scholarship_cohorts'])} facilitators' sessions"
        )


if __name__ == "__main__":
    typer.run(main)
