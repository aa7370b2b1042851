"""Progress's pure rules: a questionnaire scores and routes but never diagnoses, feedback
shows nothing below its threshold, and nothing is shared unless the participant says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from progress.domain import feedback, space
from progress.domain.plans import Plan, Questionnaire
from progress.domain.scoring import score
from pydantic import ValidationError

from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def scale(*values: int) -> list[dict]:
    return [{"value": v, "label": {"en": f"choice {v}"}} for v in values]


def questionnaire(**changes) -> dict:
    q = {
        "id": "check-in",
        "title": {"en": "Check-in", "zh": "自我检视"},
        "based_on": "written for this test",
        "items": [
            {"id": "urges", "text": {"en": "Urges this week"}, "choices": scale(0, 1, 2, 3)},
            {"id": "sleep", "text": {"en": "Slept badly"}, "choices": scale(0, 1, 2, 3)},
            {
                "id": "harm",
                "text": {"en": "Thoughts of harming yourself"},
                "choices": scale(0, 1, 2, 3),
                "safety_at": 1,
            },
        ],
        "bands": [
            {"up_to": 2, "label": {"en": "a steady week"}},
            {"up_to": 5, "label": {"en": "some strain"}},
            {"up_to": 9, "label": {"en": "a heavy week: talk to your facilitator"}},
        ],
        "when": ["weekly"],
    }
    return q | changes


def plan() -> Plan:
    return Plan.model_validate(
        {
            "based_on": "written for this test",
            "questionnaires": [questionnaire()],
            "homework": [{"session": 1, "text": {"en": "Write one page"}}],
            "milestones": [
                {"id": "first-page", "title": {"en": "First page written"}},
                {"id": "told-someone", "title": {"en": "Told someone I trust"}},
            ],
        }
    )


def test_a_score_is_the_sum_its_band_and_whether_a_safety_item_was_answered() -> None:
    q = Questionnaire.model_validate(questionnaire())
    s = score(q, {"urges": 1, "sleep": 1, "harm": 0})
    assert (s.score, s.band, s.safety) == (2, 0, False)
    heavy = score(q, {"urges": 3, "sleep": 3, "harm": 1})
    assert (heavy.score, heavy.band, heavy.safety) == (7, 2, True)


@pytest.mark.parametrize(
    ("answers", "field"),
    [
        ({"urges": 1, "sleep": 1}, "answers.harm"),  # an item left out
        ({"urges": 1, "sleep": 1, "harm": 9}, "answers.harm"),  # not one of its choices
        ({"urges": 1, "sleep": 1, "harm": 0, "mood": 2}, "answers.mood"),  # no such item
    ],
)
def test_bad_answers_name_the_item(answers: dict, field: str) -> None:
    with pytest.raises(Invalid) as raised:
        score(Questionnaire.model_validate(questionnaire()), answers)
    assert raised.value.field == field


@pytest.mark.parametrize("label", ["Likely addict", "compulsive range", "成瘾倾向", "disorder"])
def test_a_band_that_names_a_condition_is_refused(label: str) -> None:
    bands = [{"up_to": 9, "label": {"en": label}}]
    with pytest.raises(ValidationError, match="neutral words"):
        Questionnaire.model_validate(questionnaire(bands=bands))


def test_bands_rise_and_reach_the_highest_score() -> None:
    with pytest.raises(ValidationError, match="highest score, 9"):
        Questionnaire.model_validate(questionnaire(bands=[{"up_to": 5, "label": {"en": "a"}}]))
    falling = [{"up_to": 5, "label": {"en": "a"}}, {"up_to": 2, "label": {"en": "b"}}]
    with pytest.raises(ValidationError, match="above the one before"):
        Questionnaire.model_validate(questionnaire(bands=falling))


def test_feedback_shows_nothing_below_the_threshold_and_all_of_it_past() -> None:
    two = [{"helpful": 5, "safe": 4, "comment": "kind"}, {"helpful": 1, "safe": 2}]
    shown = feedback.aggregate(two, minimum=3)
    assert shown == {"answers": 2, "enough": False, "needed": 3}
    three = [*two, {"helpful": 3, "safe": 3, "comment": "a bit fast"}]
    shown = feedback.aggregate(three, minimum=3)
    assert shown["enough"] and shown["helpful"]["mean"] == 3.0
    assert shown["safe"]["spread"] == {"1": 0, "2": 1, "3": 1, "4": 1, "5": 0}
    assert shown["comments"] == ["a bit fast", "kind"]  # sorted, not in the order given


def doc(rid: str = "r1", cohort: str = "c1", **changes) -> dict:
    return space.new_space(rid, cohort, "p1", NOW) | changes


def test_nothing_is_shared_by_default_and_a_closed_space_shares_nothing() -> None:
    d = doc()
    assert d["sharing"] == {"scores": False, "homework": False, "milestones": False}
    assert d["with_facilitator"] is False and d["peer_id"] is None
    shared = space.sharing_set(d, {"scores": True}, with_facilitator=True).fields
    assert shared == {
        "sharing": {"scores": True, "homework": False, "milestones": False},
        "with_facilitator": True,
    }
    closing = space.closed(d | shared | {"peer_id": "r2"}, None, NOW).fields
    assert closing["status"] == "closed" and closing["with_facilitator"] is False
    assert closing["peer_id"] is None and not any(closing["sharing"].values())
    with pytest.raises(Invalid) as raised:
        space.sharing_set(d, {"journal": True}, with_facilitator=False)
    assert raised.value.field == "sharing.journal"


def test_a_move_closes_only_the_old_cohorts_enrollment() -> None:
    d = doc(cohort="c2")
    assert space.closed(d, "c1", NOW) is None  # the old cohort's cancellation, after the move
    assert space.closed(d, "c2", NOW) is not None
    assert space.reopened(d, "c2", "p1") is None
    assert space.reopened(d, "c3", "p1").fields["cohort_id"] == "c3"


def test_a_safety_answer_emits_an_event_that_carries_no_answer() -> None:
    decision = space.answered(
        doc(),
        space.empty_record(),
        plan(),
        "check-in",
        {"urges": 0, "sleep": 0, "harm": 2},
        "x",
        NOW,
    )
    [event] = decision.emit
    assert isinstance(event, ev.ProgressSafetyAnswered)
    assert set(event.model_dump()) == {"registration_id", "cohort_id", "program_id", "answered_at"}
    again = space.answered(doc(), decision.record, plan(), "check-in", {}, "x", NOW)
    assert again.record is None and again.emit == []  # the same submission: recorded once
    with pytest.raises(Conflict):
        space.answered(doc(status="closed"), space.empty_record(), plan(), "check-in", {}, "y", NOW)


def test_a_milestone_sends_its_word_once() -> None:
    record = space.empty_record()
    first = space.milestone_marked(doc(), record, plan(), "first-page", True, NOW)
    [word] = first.emit
    assert (word.reached, word.of, word.title) == (1, 2, {"en": "First page written"})
    again = space.milestone_marked(doc(), first.record, plan(), "first-page", True, NOW)
    assert again.emit == [] and again.record is None
    undone = space.milestone_marked(doc(), first.record, plan(), "first-page", False, NOW)
    assert undone.emit == [] and undone.record["milestones"] == {}
    with pytest.raises(NotFound):
        space.milestone_marked(doc(), record, plan(), "no-such", True, NOW)


def test_an_invitation_is_accepted_only_by_another_open_member_of_the_cohort_in_time() -> None:
    inviting = doc() | space.peer_invited(doc(), "hash", NOW).fields
    assert inviting["peer_invite_expires_at"] == NOW + space.INVITE_TTL
    with pytest.raises(Invalid):
        space.peer_accepted(inviting, inviting, NOW)  # one's own code
    with pytest.raises(NotFound):
        space.peer_accepted(inviting, doc("r2", cohort="c9"), NOW)  # another cohort
    with pytest.raises(NotFound):
        space.peer_accepted(inviting, doc("r2"), NOW + timedelta(days=8))  # expired
    accepted = space.peer_accepted(inviting, doc("r2"), NOW).fields
    assert accepted == {"peer_id": "r2", "peer_invite_hash": None, "peer_invite_expires_at": None}
    sharing = inviting | accepted
    assert space.peer_stopped(sharing, "r2").fields["peer_id"] is None  # the one who sees
    with pytest.raises(NotFound):
        space.peer_stopped(sharing, "r3")


def test_a_shared_part_holds_only_the_kinds_shared() -> None:
    record = space.empty_record() | {
        "responses": [
            {"questionnaire_id": "q", "at": "t", "score": 3, "band": 1, "answers": {"a": 3}}
        ],
        "homework_done": {"1": "t"},
        "journal": {"1": "private words"},
        "milestones": {"first-page": "t"},
    }
    only_milestones = space.shared_part(doc(), record, {"milestones": True})
    assert only_milestones == {"milestones": ["first-page"]}
    everything = space.shared_part(doc(), record, dict.fromkeys(space.SHAREABLE, True))
    assert everything["scores"] == [{"questionnaire_id": "q", "at": "t", "score": 3, "band": 1}]
    assert "private words" not in str(everything) and "answers" not in str(everything)


def test_a_questionnaire_is_due_as_the_program_set_it() -> None:
    week_ago, yesterday = NOW - timedelta(days=7), NOW - timedelta(days=1)
    assert space.due(["weekly"], [], NOW) and space.due(["weekly"], [week_ago], NOW)
    assert not space.due(["weekly"], [week_ago, yesterday], NOW)
    assert space.due(["first_session"], [], NOW) and not space.due(
        ["first_session"], [week_ago], NOW
    )
    # Taken at the first session and again at the last: open for the second time.
    assert space.due(["first_session", "last_session"], [week_ago], NOW)
    assert not space.due(["first_session", "last_session"], [week_ago, yesterday], NOW)
