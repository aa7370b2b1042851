"""From a submitted HTML form to what an API takes, and the form's own checks.

Pure: a browser sends strings (and nothing for an unticked box); the APIs take JSON
with booleans. What the APIs refuse comes back per field and is shown beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

YES = "yes"


def application(
    form: Mapping[str, str], safety_ids: list[str], intake: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The registration API's ``Application`` from the sign-up form, and the fields the
    form itself finds missing (an unanswered safety question or required question of the
    program's own, ``intake``)."""
    missing: dict[str, str] = {}
    intake_answers: dict[str, str] = {}
    for q in intake or []:
        value = form.get(f"intake_{q['id']}", "").strip()
        if value:
            intake_answers[q["id"]] = value
        elif q.get("required"):
            missing[f"intake_answers.{q['id']}"] = "required"
    answers: dict[str, bool] = {}
    for qid in safety_ids:
        value = form.get(f"safety_{qid}")
        if value not in ("yes", "no"):
            missing[f"safety_answers.{qid}"] = "required"
        else:
            answers[qid] = value == YES
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "email": form.get("email", "").strip(),
        "age_attested": form.get("age_attested") == YES,
        "single_gender_preference": form.get("single_gender_preference") == YES,
        "scholarship_requested": form.get("scholarship_requested") == YES,
        "safety_answers": answers,
        "intake_answers": intake_answers,
        "language": form.get("language") if form.get("language") in ("en", "zh") else "zh",
        "privacy_notice_accepted": form.get("privacy_notice_accepted") == YES,
    }
    for optional in ("chat_handle", "scholarship_reason", "gender", "timezone"):
        value = form.get(optional, "").strip()
        if value:
            body[optional] = value
    return body, missing


def flagged(answers: Mapping[str, bool]) -> bool:
    return any(answers.values())


def minor_units(text: str) -> int | None:
    """``"300"`` or ``"300.50"`` as 30000 or 30050; None for anything else (negative,
    more than two decimals, not a number)."""
    cleaned = text.strip().replace(",", "")
    whole, _, cents = cleaned.partition(".")
    if not whole.isdigit() or (cents and (not cents.isdigit() or len(cents) > 2)):
        return None
    return int(whole) * 100 + int(cents.ljust(2, "0") or 0)
