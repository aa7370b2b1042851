"""A questionnaire's answers scored (pure): the sum of the chosen values, the band it
falls in, and whether a safety item was answered at or past its threshold."""

from __future__ import annotations

from dataclasses import dataclass

from progress.domain.plans import Questionnaire
from shared.errors import Invalid


@dataclass(frozen=True)
class Scored:
    score: int
    band: int  # index into the questionnaire's bands
    safety: bool


def score(questionnaire: Questionnaire, answers: dict[str, int]) -> Scored:
    """Every item answered with one of its choices, or Invalid naming the item."""
    unknown = sorted(set(answers) - {i.id for i in questionnaire.items})
    if unknown:
        raise Invalid(f"answers.{unknown[0]}", "no such item in this questionnaire")
    total, safety = 0, False
    for item in questionnaire.items:
        if item.id not in answers:
            raise Invalid(f"answers.{item.id}", "answer every item")
        value = answers[item.id]
        if value not in {c.value for c in item.choices}:
            raise Invalid(f"answers.{item.id}", "not one of this item's choices")
        total += value
        if item.safety_at is not None and value >= item.safety_at:
            safety = True
    band = next(i for i, b in enumerate(questionnaire.bands) if total <= b.up_to)
    return Scored(score=total, band=band, safety=safety)
