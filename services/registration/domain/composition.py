"""A cohort's gender make-up, and the applicants whose wish it does not meet (pure).

Any program takes a wish for a single-gender group: people uncomfortable in a mixed
group should still apply. Whether a cohort is mixed or single-gender is often known
only once the sign-ups are in. When a coordinator sets it, everyone still in the cohort
who asked for a single-gender group it does not give is told, and may withdraw until
the window ends with the refund the program sets for that case, whatever its usual
refund policy (ProgramSpec.composition_refund).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from registration.domain.ledger import SEAT_STATUSES, Ledger, Status
from registration.domain.programs import Gender, ProgramSpec
from shared import events as ev


class Composition(StrEnum):
    mixed = "mixed"
    women = "women"
    men = "men"


# The one gender a single-gender cohort is for.
FOR_GENDER = {Composition.women: Gender.woman, Composition.men: Gender.man}

# Who is still in a cohort, and so is told of its make-up.
STILL_IN = SEAT_STATUSES | {Status.waitlisted}


def wish_met(composition: Composition, gender: str | None) -> bool:
    """Whether a cohort of ``composition`` meets a wish for a single-gender group of a
    person of ``gender`` (a wish with no gender given is met by no cohort)."""
    return gender is not None and FOR_GENDER.get(composition) == gender


@dataclass(frozen=True)
class Wish:
    """An applicant's wish for a single-gender group, with their gender (None: not given)."""

    gender: str | None


@dataclass
class CompositionSet:
    """What setting the make-up does: the cohort's new ``composition`` field, and one
    notice per applicant whose wish it does not meet."""

    stored: dict[str, Any]
    notices: list[ev.EventData] = field(default_factory=list)


def set_composition(
    cohort: dict[str, Any],
    ledger: Ledger,
    composition: Composition,
    wishes: dict[str, str | None],
    program: ProgramSpec,
    now: datetime,
) -> CompositionSet | None:
    """``wishes``: each registration of the cohort that asked for a single-gender group,
    with the applicant's gender. None when the cohort's make-up is already that."""
    current = cohort.get("composition") or {}
    if current.get("kind") == composition:
        return None
    withdraw_by = now + timedelta(days=program.composition_window_days)
    unmet = sorted(
        rid
        for rid, gender in wishes.items()
        if rid in ledger.entries
        and ledger.entries[rid].status in STILL_IN
        and not wish_met(composition, gender)
    )
    refundable = program.composition_refundable
    notices: list[ev.EventData] = [
        ev.RegistrationCompositionUnmet(
            registration_id=rid,
            cohort_id=cohort["_id"],
            composition=str(composition),
            withdraw_by=withdraw_by,
            refundable=refundable,
        )
        for rid in unmet
    ]
    stored = {"kind": str(composition), "set_at": now, "withdraw_by": withdraw_by, "unmet": unmet}
    return CompositionSet(stored, notices)


def latecomer(
    cohort: dict[str, Any],
    registration_id: str,
    gender: str | None,
    program: ProgramSpec,
    now: datetime,
) -> CompositionSet | None:
    """An applicant who asked for a single-gender group joins a cohort whose make-up is
    already set and does not meet the wish: told as those before them were, with a
    window of their own from now (the page showed the make-up, but it is easy to miss).
    ``gender`` is that of an applicant who asked for a single-gender group."""
    composition = cohort.get("composition") or {}
    if not composition or wish_met(Composition(composition["kind"]), gender):
        return None
    late = dict(composition.get("late") or {})
    if registration_id in late or registration_id in composition.get("unmet", ()):
        return None
    late[registration_id] = withdraw_by = now + timedelta(days=program.composition_window_days)
    notice = ev.RegistrationCompositionUnmet(
        registration_id=registration_id,
        cohort_id=cohort["_id"],
        composition=composition["kind"],
        withdraw_by=withdraw_by,
        refundable=program.composition_refundable,
    )
    return CompositionSet({**composition, "late": late}, [notice])


def notice_for(cohort: dict[str, Any], registration_id: str, now: datetime) -> dict | None:
    """The open window of a registration whose wish the cohort's make-up does not meet."""
    composition = cohort.get("composition") or {}
    if registration_id in composition.get("unmet", ()):
        withdraw_by = composition["withdraw_by"]
    elif registration_id in (composition.get("late") or {}):
        withdraw_by = composition["late"][registration_id]
    else:
        return None
    if now > withdraw_by:
        return None
    return {"composition": composition["kind"], "withdraw_by": withdraw_by}


def withdrawal_refundable(
    cohort: dict[str, Any], program: ProgramSpec, registration_id: str, now: datetime
) -> bool:
    """A withdrawal within the window of an unmet wish gets the program's refund for that
    case; any other, the program's refund policy."""
    if notice_for(cohort, registration_id, now) is not None and program.composition_refundable:
        return True
    return program.refundable
