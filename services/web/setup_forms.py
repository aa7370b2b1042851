"""A coordinator's program and cohort forms, as registration's ProgramSpec and CohortSpec.

Pure. The forms ask in the words coordinators use (a price in yuan, the first session's
date and time where it takes place, how many weekly sessions); registration checks
everything again and names the field at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from web.forms import YES, minor_units

SAFETY_ROWS = 3
INTAKE_ROWS = 3
MOST_QUESTIONS = 20  # registration's limit of each kind of question
QUESTION_ID = re.compile(r"^[a-z0-9_]{1,40}$")


def program_spec(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ProgramSpec, and the fields the form itself finds wrong (keyed as the API's)."""
    problems: dict[str, str] = {}
    price = minor_units(form.get("price", ""))
    if price is None:
        problems["price.amount_minor"] = "price"
    spec: dict[str, Any] = {
        "title": form.get("title", "").strip(),
        "display_name": form.get("display_name", "").strip(),
        "kind": form.get("kind", "recovery_group"),
        "language": form.get("language", "zh"),
        "facilitator": form.get("facilitator", "").strip(),
        "description": form.get("description", "").strip(),
        "price": {"amount_minor": price or 0, "currency": form.get("currency", "CNY")},
        "refund_policy": form.get("refund_policy", "no_refund"),
        "gender_composition": form.get("gender_composition", "mixed"),
        "composition_refund": form.get("composition_refund", "refundable"),
        "cancellation_refund": form.get("cancellation_refund", "refundable"),
        "sign_up_for": form.get("sign_up_for", "series"),
        "approval_required": form.get("approval_required") == YES,
        "scholarships_allowed": form.get("scholarships_allowed") == YES,
        "safety_questions": _safety_questions(form),
        "intake_questions": _intake_questions(form, problems),
    }
    if form.get("contact_email", "").strip():
        spec["contact_email"] = form["contact_email"].strip()
    for number in ("minimum_age", "capacity", "composition_window_days"):
        raw = form.get(number, "").strip()
        if raw:
            if raw.isdigit():
                spec[number] = int(raw)
            else:
                problems[number] = number
    other_title = form.get("translation_title", "").strip()
    other_description = form.get("translation_description", "").strip()
    if other_title:
        spec["translation"] = {"title": other_title, "description": other_description}
    elif other_description:
        problems["translation.title"] = "a title in the other language goes with its description"
    if form.get("consent_form_ref", "").strip():
        spec["consent_form_ref"] = form["consent_form_ref"].strip()
    return spec, problems


def rows(form: Mapping[str, str], kind: str, spare: int = 0) -> range:
    """The form's rows of ``kind`` questions ("safety" or "intake"): as many as it holds
    and ``spare`` empty ones more, at least a new form's, at most registration's limit."""
    least = SAFETY_ROWS if kind == "safety" else INTAKE_ROWS
    held = max((n + 1 for n in range(MOST_QUESTIONS) if f"{kind}_{n}_text" in form), default=0)
    return range(min(MOST_QUESTIONS, max(least, held + spare)))


def _question_ids(form: Mapping[str, str], kind: str) -> dict[int, str]:
    """Each filled row's question id: the one it was shown with (an edited program's
    questions keep theirs, so answers already given still name them), else a new
    ``q<n>`` that no row of the form holds."""
    shown = {r: form.get(f"{kind}_{r}_id", "") for r in rows(form, kind)}
    taken = {i for i in shown.values() if QUESTION_ID.match(i)}
    ids: dict[int, str] = {}
    for row, kept in shown.items():
        if not form.get(f"{kind}_{row}_text", "").strip():
            continue
        ids[row] = kept if QUESTION_ID.match(kept) else _unused("q", row + 1, taken)
    return ids


def _unused(prefix: str, n: int, taken: set[str]) -> str:
    """``prefix`` and the first number from ``n`` on that makes an id not ``taken``
    (which then is)."""
    while f"{prefix}{n}" in taken:
        n += 1
    taken.add(f"{prefix}{n}")
    return f"{prefix}{n}"


def _intake_questions(form: Mapping[str, str], problems: dict[str, str]) -> list[dict[str, Any]]:
    """The program's own questions: a choice offers its answers separated by ";"."""
    questions = []
    for row, qid in _question_ids(form, "intake").items():
        kind = "choice" if form.get(f"intake_{row}_kind") == "choice" else "text"
        question: dict[str, Any] = {
            "id": qid,
            "text": form[f"intake_{row}_text"].strip(),
            "kind": kind,
            "required": form.get(f"intake_{row}_required") == YES,
            "sensitive": form.get(f"intake_{row}_sensitive") == YES,
        }
        if form.get(f"intake_{row}_text_zh", "").strip():
            question["text_zh"] = form[f"intake_{row}_text_zh"].strip()
        answers = [a.strip() for a in form.get(f"intake_{row}_choices", "").split(";")]
        answers = [a for a in answers if a]
        if kind == "choice":
            if len(answers) < 2:
                problems[f"intake_{row}_choices"] = "two or more answers, separated by ;"
            question["choices"] = [{"id": f"c{i + 1}", "text": a} for i, a in enumerate(answers)]
        questions.append(question)
    return questions


def _safety_questions(form: Mapping[str, str]) -> list[dict[str, str]]:
    questions = []
    for row, qid in _question_ids(form, "safety").items():
        question = {"id": qid, "text": form[f"safety_{row}_text"].strip()}
        if form.get(f"safety_{row}_text_zh", "").strip():
            question["text_zh"] = form[f"safety_{row}_text_zh"].strip()
        questions.append(question)
    return questions


# What the program form shows as typed, from the program as registration's API gives it.
AS_TYPED = (
    "title", "display_name", "kind", "language", "facilitator", "contact_email",
    "description", "refund_policy", "minimum_age", "capacity", "gender_composition",
    "composition_window_days", "composition_refund", "sign_up_for", "cancellation_refund",
    "consent_form_ref",
)  # fmt: skip


def program_form(program: Mapping[str, Any]) -> dict[str, str]:
    """The program form filled from ``program`` as registration's API gives it: the
    inverse of :func:`program_spec`, its questions' ids kept in the form."""
    form = {name: str(program[name]) for name in AS_TYPED if program.get(name) is not None}
    price = program.get("price") or {}
    form["price"] = _amount(price.get("amount_minor", 0))
    form["currency"] = price.get("currency", "CNY")
    for flag in ("approval_required", "scholarships_allowed"):
        if program.get(flag):
            form[flag] = YES
    translation = program.get("translation") or {}
    form["translation_title"] = translation.get("title", "")
    form["translation_description"] = translation.get("description", "")
    for row, question in enumerate(program.get("safety_questions") or []):
        form |= _question_fields("safety", row, question)
    for row, question in enumerate(program.get("intake_questions") or []):
        form |= _question_fields("intake", row, question)
    return form


def _amount(minor: int) -> str:
    """90000 as "900", 90050 as "900.50": what :func:`minor_units` reads back."""
    whole, cents = divmod(minor, 100)
    return f"{whole}.{cents:02d}" if cents else str(whole)


def _question_fields(kind: str, row: int, question: Mapping[str, Any]) -> dict[str, str]:
    fields = {
        f"{kind}_{row}_id": question["id"],
        f"{kind}_{row}_text": question["text"],
        f"{kind}_{row}_text_zh": question.get("text_zh") or "",
    }
    if kind == "intake":
        fields[f"intake_{row}_kind"] = question.get("kind", "text")
        fields[f"intake_{row}_choices"] = "; ".join(c["text"] for c in question.get("choices", []))
        for flag in ("required", "sensitive"):
            if question.get(flag):
                fields[f"intake_{row}_{flag}"] = YES
    return fields


def kept_from(program: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The edited ``spec`` with what the form does not show kept from ``program`` as it
    is: its crisis resources, and each answer of a choice question that is still there
    (the same text) with its id and Chinese text, so answers already given still name
    it. Registration replaces a program whole."""
    before = {q["id"]: q for q in program.get("intake_questions") or []}
    questions = [_kept_choices(q, before.get(q["id"])) for q in spec["intake_questions"]]
    crisis = program.get("crisis_resources") or []
    return {**spec, "intake_questions": questions, "crisis_resources": crisis}


def _kept_choices(question: dict[str, Any], before: Mapping[str, Any] | None) -> dict[str, Any]:
    if not before or not question.get("choices"):
        return question
    old = {c["text"]: c for c in before.get("choices") or []}
    taken = {c["id"] for c in before.get("choices") or []}  # a removed answer's id too
    choices = []
    for choice in question["choices"]:
        kept = old.pop(choice["text"], None)
        if kept is None:
            kept = {"id": _unused("c", 1, taken), "text": choice["text"]}
        choices.append(kept)
    return {**question, "choices": choices}


def cohort_spec(form: Mapping[str, str], now: datetime) -> tuple[dict[str, Any], dict[str, str]]:
    """The CohortSpec: ``weeks`` weekly sessions from the first one, each ``minutes`` long,
    at the same local time in ``timezone``; sign-up open from now until ``closes_on``."""
    problems: dict[str, str] = {}
    try:
        zone = ZoneInfo(form.get("timezone", "Asia/Shanghai"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("Asia/Shanghai")
        problems["timezone"] = "timezone"
    first = _local(form.get("first_date", ""), form.get("first_time", ""), zone)
    if first is None:
        problems["sessions"] = "first_date"
    weeks, minutes = _count(form.get("weeks", ""), 1, 52), _count(form.get("minutes", ""), 15, 600)
    if weeks is None:
        problems["weeks"] = "weeks"
    if minutes is None:
        problems["minutes"] = "minutes"
    closes = _local(form.get("closes_on", ""), "23:59", zone)
    if closes is None:
        problems["registration_closes_at"] = "closes_on"
    if problems:
        return {}, problems
    assert first is not None and weeks is not None and minutes is not None and closes
    sessions = [
        {
            "starts_at": (first + timedelta(weeks=w)).isoformat(),
            "ends_at": (first + timedelta(weeks=w, minutes=minutes)).isoformat(),
            "timezone": zone.key,
        }
        for w in range(weeks)
    ]
    spec: dict[str, Any] = {
        "label": form.get("label", "").strip(),
        "sessions": sessions,
        "registration_opens_at": now.isoformat(),
        "registration_closes_at": closes.isoformat(),
    }
    capacity = form.get("capacity", "").strip()
    if capacity.isdigit():
        spec["capacity"] = int(capacity)
    return spec, problems


def _local(day: str, time: str, zone: ZoneInfo) -> datetime | None:
    try:
        return datetime.fromisoformat(f"{day.strip()}T{time.strip()}").replace(tzinfo=zone)
    except ValueError:
        return None


def _count(raw: str, low: int, high: int) -> int | None:
    raw = raw.strip()
    return int(raw) if raw.isdigit() and low <= int(raw) <= high else None


SESSION_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})$")


def sessions_from_lines(text: str, timezone: str) -> tuple[list[dict[str, str]], int | None]:
    """Sessions typed one per line as ``2027-05-05 19:00-20:30`` in the group's time zone
    (a session ending at or before its start ends the next day); with the number of the
    first line that is not one, or None."""
    zone = ZoneInfo(timezone)
    sessions = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for n, line in enumerate(lines, start=1):
        m = SESSION_LINE.match(line)
        starts = m and _local(m.group(1), m.group(2), zone)
        ends = m and _local(m.group(1), m.group(3), zone)
        if not starts or not ends:
            return [], n
        if ends <= starts:
            ends += timedelta(days=1)
        sessions.append(
            {"starts_at": starts.isoformat(), "ends_at": ends.isoformat(), "timezone": zone.key}
        )
    return sessions, (1 if not sessions else None)


def session_lines(sessions: list[dict[str, Any]]) -> str:
    """The sessions as the form shows them, one per line, each in its own time zone."""
    lines = []
    for s in sessions:
        zone = ZoneInfo(s["timezone"])
        starts = datetime.fromisoformat(s["starts_at"]).astimezone(zone)
        ends = datetime.fromisoformat(s["ends_at"]).astimezone(zone)
        lines.append(f"{starts:%Y-%m-%d %H:%M}-{ends:%H:%M}")
    return "\n".join(lines)
