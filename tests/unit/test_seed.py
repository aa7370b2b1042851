"""The seeded programs as their organisers describe them (services/registration/seed.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from registration import seed


def test_the_facilitators_session_is_the_first_wednesday_of_may_july_september_november() -> None:
    # Run on 2026-11-22 the old seed gave December, February, April and June.
    assert seed.facilitator_dates(date(2026, 11, 22)) == [
        date(2027, 5, 5),
        date(2027, 7, 7),
        date(2027, 9, 1),
    ]
    # A session two days away is too close to sign up for; the next one is offered.
    assert seed.facilitator_dates(date(2027, 5, 3), count=2) == [date(2027, 7, 7), date(2027, 9, 1)]
    assert seed.facilitator_dates(date(2027, 5, 1), count=1) == [date(2027, 5, 5)]
    cohort = seed.facilitator_cohort(date(2027, 5, 5))
    (only,) = cohort["sessions"]
    starts, ends = (datetime.fromisoformat(only[k]) for k in ("starts_at", "ends_at"))
    assert (starts.hour, starts.minute, ends.hour, ends.minute) == (19, 0, 20, 30)
    assert only["timezone"] == "Asia/Shanghai" and starts.weekday() == 2


def test_the_recovery_group_is_held_in_english_with_a_chinese_translation() -> None:
    group = seed.RECOVERY_GROUP
    assert group["language"] == "en" and group["translation"]["title"] == "六周线上康复小组"


def test_each_facilitators_session_gets_a_scholarship_budget_in_payments() -> None:
    import json

    import httpx

    put: list[tuple[str, dict]] = []

    def payments(request: httpx.Request) -> httpx.Response:
        put.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={})

    with httpx.Client(base_url="http://payments", transport=httpx.MockTransport(payments)) as c:
        seed.seed_budgets(c, [("c-1", "p-f"), ("c-2", "p-f")])
    budget = {"amount_minor": 45000, "currency": "CNY", "program_id": "p-f"}
    assert put == [
        ("/cohorts/c-1/scholarship-budget", budget),
        ("/cohorts/c-2/scholarship-budget", budget),
    ]
    assert seed.FACILITATOR_SESSION["scholarships_allowed"] is True


def test_the_facilitators_session_asks_how_one_works_with_groups() -> None:
    from registration.domain.programs import ProgramSpec

    spec = ProgramSpec.model_validate(seed.FACILITATOR_SESSION)
    work, to_know = spec.intake_questions
    assert work.required and work.kind == "choice"
    assert {c.id for c in work.choices} == {"facilitator", "therapist", "coach", "other"}
    assert to_know.kind == "text" and to_know.sensitive and not to_know.required
    assert spec.safety_questions == []  # a separate kind, with its own routing


def test_the_three_programs_carry_their_own_work_between_sessions() -> None:
    from progress.domain.plans import Plan
    from progress.seed_plans import PLANS

    programs = (seed.RECOVERY_GROUP, seed.FACILITATOR_SESSION, seed.COUNSELLING_GROUP)
    assert set(PLANS) == {p["title"] for p in programs}  # found by registration's titles
    for program in programs:
        plan = Plan.model_validate(PLANS[program["title"]])
        assert plan.questionnaires and plan.homework and plan.milestones and plan.based_on
        for q in plan.questionnaires:
            assert "Holdspace" in q.based_on  # written for this project, and says so
        safety = {i.id for q in plan.questionnaires for i in q.items if i.safety_at is not None}
        # Safety items where intake asks safety questions; routed as intake's are.
        assert bool(safety) is bool(program["safety_questions"])
        homework_after = {h.session for h in plan.homework}
        assert homework_after <= set(range(1, 11))
    centre = Plan.model_validate(PLANS[seed.COUNSELLING_GROUP["title"]])
    assert len(centre.milestones) == 10 and "tasks-based" in centre.based_on
    assert [h.session for h in centre.homework] == list(range(1, 10))  # before each next one


def test_the_counselling_centre_group_is_held_in_chinese_weekly_for_ten_weeks() -> None:
    group = seed.COUNSELLING_GROUP
    assert group["language"] == "zh" and group["translation"]["title"]
    assert group["consent_form_ref"] == "counselling-group-consent"
    cohort = seed.counselling_cohort(date(2026, 12, 7))
    starts = [datetime.fromisoformat(s["starts_at"]) for s in cohort["sessions"]]
    assert len(starts) == 10 and all(s.weekday() == 3 and s.hour == 19 for s in starts)
    assert all(b - a == timedelta(weeks=1) for a, b in zip(starts, starts[1:], strict=False))
