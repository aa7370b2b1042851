"""The space between sessions as the pages show it, and its forms as progress takes
them (pure).

A program writes its questionnaires, homework and milestones in its own words, in
English, Chinese or both (``{"en": ..., "zh": ...}``): a page shows them in its
language, or in the other one when that is all there is. What a form sends is
checked here first (every item answered, 1 to 5 for feedback), so nothing half-done
reaches the service.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from web.domain.chart import Chart, line_chart

YES = "yes"
SHAREABLE = ("scores", "homework", "milestones")
FEEDBACK_SCALE = range(1, 6)


def words(text: Mapping[str, str] | None, lang: str) -> str:
    """A program's text in ``lang``, else in the other language it was written in."""
    if not text:
        return ""
    other = "en" if lang == "zh" else "zh"
    return text.get(lang) or text.get(other) or ""


def short_date(value: str | datetime, tz: str, lang: str) -> str:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = when.astimezone(ZoneInfo(tz))
    if lang == "zh":
        return f"{local.month}月{local.day}日"
    return f"{local.day} {local:%b}"


def questionnaires(space: dict[str, Any], lang: str, tz: str) -> list[dict[str, Any]]:
    """Each questionnaire of the plan with the participant's answers to it so far: a
    row per answer (date, score, band), the chart of them, the latest, and whether it
    is waiting for them now (as the program set when each is taken)."""
    every = [q["id"] for q in space["plan"]["questionnaires"]]
    due = set(space.get("due", every))
    shown = []
    for q in space["plan"]["questionnaires"]:
        rows = [
            {
                "when": short_date(r["at"], tz, lang),
                "score": r["score"],
                "band": words(r.get("band"), lang),
            }
            for r in space["responses"]
            if r["questionnaire_id"] == q["id"]
        ]
        limits = [b["up_to"] for b in q["bands"]]
        chart: Chart | None = line_chart([(r["when"], r["score"]) for r in rows], limits)
        latest = rows[-1] if rows else None
        shown.append(
            {"q": q, "rows": rows, "chart": chart, "latest": latest, "due": q["id"] in due}
        )
    return shown


def shared_views(
    shared: list[dict[str, Any]], plan: dict[str, Any], lang: str, tz: str
) -> list[dict[str, Any]]:
    """What members share with the participant, with the plan's words for it."""
    titles = {q["id"]: words(q["title"], lang) for q in plan["questionnaires"]}
    out = []
    for part in shared:
        scores = [
            {
                "title": titles.get(s["questionnaire_id"], s["questionnaire_id"]),
                "when": short_date(s["at"], tz, lang),
                "score": s["score"],
                "band": words(s.get("band"), lang),
            }
            for s in part.get("scores") or []
        ]
        out.append(
            {
                "scores": scores if "scores" in part else None,
                "homework_done": part.get("homework_done"),
                "milestones": [words(m.get("title"), lang) or m["id"] for m in part["milestones"]]
                if "milestones" in part
                else None,
            }
        )
    return out


def feedback_sessions(
    sessions: list[dict[str, Any]], given: list[int], now: datetime
) -> list[dict[str, Any]]:
    """The sessions that have begun (numbered from 1), each with whether feedback on it
    was given: one cannot say how a session went before it took place."""
    return [
        {"session": n, "starts_at": s["starts_at"], "given": n in given}
        for n, s in enumerate(sessions, start=1)
        if datetime.fromisoformat(s["starts_at"]) <= now
    ]


# --- the forms ---------------------------------------------------------------------------


def answers_from(
    form: Mapping[str, str], questionnaire: dict[str, Any]
) -> tuple[dict[str, int], dict[str, str]]:
    """The chosen value of each item (``item_<id>``), and the items left unanswered."""
    answers: dict[str, int] = {}
    missing: dict[str, str] = {}
    for item in questionnaire["items"]:
        raw = form.get(f"item_{item['id']}", "")
        values = {c["value"] for c in item["choices"]}
        if raw.isdigit() and int(raw) in values:
            answers[item["id"]] = int(raw)
        else:
            missing[f"answers.{item['id']}"] = "required"
    return answers, missing


def safety_reached(questionnaire: dict[str, Any], answers: Mapping[str, int]) -> bool:
    """Whether an answer reached its item's safety threshold: the participant is shown
    the crisis lines at once (progress routes the answer to a coordinator)."""
    return any(
        item.get("safety_at") is not None and answers.get(item["id"], -1) >= item["safety_at"]
        for item in questionnaire["items"]
    )


def response_id(form: Mapping[str, str]) -> str:
    """The form's own id, so the same form sent twice is recorded once."""
    try:
        return str(uuid.UUID(form.get("response_id", "")))
    except ValueError:
        return str(uuid.uuid4())


def homework_from(form: Mapping[str, str]) -> dict[str, Any]:
    """Done or not, and the journal as it now reads ('' clears it)."""
    return {"done": form.get("done") == YES, "journal": form.get("journal", "").strip()}


def milestone_changes(
    form: Mapping[str, str], milestones: list[dict[str, Any]]
) -> list[tuple[str, bool]]:
    """The milestones whose box changed: (id, reached) for each, in the plan's order."""
    changes = []
    for m in milestones:
        ticked = form.get(f"m_{m['id']}") == YES
        if ticked != bool(m.get("reached_at")):
            changes.append((m["id"], ticked))
    return changes


def sharing_from(form: Mapping[str, str]) -> dict[str, bool]:
    return {k: form.get(k) == YES for k in (*SHAREABLE, "with_facilitator")}


def code_from(form: Mapping[str, str]) -> str:
    return form.get("code", "").strip().upper()


def feedback_from(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    body: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for question in ("helpful", "safe"):
        raw = form.get(question, "")
        if raw.isdigit() and int(raw) in FEEDBACK_SCALE:
            body[question] = int(raw)
        else:
            missing[question] = "required"
    comment = form.get("comment", "").strip()
    if comment:
        body["comment"] = comment
    return body, missing
