"""What a program offers between sessions (pure): its questionnaires, the homework of
each session, and its milestones, in the program's own words.

A questionnaire routes, it never diagnoses: its bands are described in neutral words,
and a label that names a condition is refused. An item the program marks as a safety
item (``safety_at``) sends an answer at or past that value through the same safety
routing as intake's questions (a person looks, the crisis lines come at once).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Strict = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
When = Literal["sign_up", "first_session", "last_session", "weekly"]

# Words a band may not use: a score describes where someone is, it names no condition.
DIAGNOSTIC = re.compile(
    r"addict|disorder|diagnos|patholog|compulsive|disease|成瘾|上瘾|障碍|诊断|病", re.IGNORECASE
)


class Words(BaseModel):
    """A text in the program's languages; at least one of them."""

    model_config = Strict | ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["en"], "properties": {"en": {"type": "string"}}},
                {"required": ["zh"], "properties": {"zh": {"type": "string"}}},
            ]
        }
    )
    en: Text | None = None
    zh: Text | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> Words:
        if not (self.en or self.zh):
            raise ValueError("give the text in en, zh or both")
        return self

    def in_language(self, language: str) -> str:
        first, second = (self.zh, self.en) if language == "zh" else (self.en, self.zh)
        return first or second or ""

    def all(self) -> str:
        return " ".join(t for t in (self.en, self.zh) if t)


class Choice(BaseModel):
    model_config = Strict
    value: int = Field(ge=0, le=10)
    label: Words


class Item(BaseModel):
    model_config = Strict
    id: Slug
    text: Words
    choices: list[Choice] = Field(min_length=2, max_length=11)
    # A safety item: an answer at or past this value goes to a coordinator at once.
    safety_at: int | None = Field(None, ge=0, le=10)

    @field_validator("choices")
    @classmethod
    def _distinct_values(cls, choices: list[Choice]) -> list[Choice]:
        if len({c.value for c in choices}) != len(choices):
            raise ValueError("each choice needs a value of its own")
        return choices


class Band(BaseModel):
    """Scores up to and including ``up_to`` (and past the band before) are described so."""

    model_config = Strict
    up_to: int = Field(ge=0, le=1000)
    label: Words

    @field_validator("label")
    @classmethod
    def _neutral(cls, label: Words) -> Words:
        if DIAGNOSTIC.search(label.all()):
            raise ValueError("describe a band in neutral words: it must not name a condition")
        return label


class Questionnaire(BaseModel):
    model_config = Strict
    id: Slug
    title: Words
    based_on: Text = Field(description="what the items were written from, and their licence")
    items: list[Item] = Field(min_length=1, max_length=40)
    bands: list[Band] = Field(min_length=1, max_length=6)
    when: list[When] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _consistent(self) -> Questionnaire:
        if len({i.id for i in self.items}) != len(self.items):
            raise ValueError("items: each item needs an id of its own")
        limits = [b.up_to for b in self.bands]
        if limits != sorted(set(limits)):
            raise ValueError("bands: each band's up_to must be above the one before")
        if limits[-1] < self.highest_score():
            raise ValueError(
                f"bands: the last band must reach the highest score, {self.highest_score()}"
            )
        return self

    def highest_score(self) -> int:
        return sum(max(c.value for c in item.choices) for item in self.items)


class Homework(BaseModel):
    """What to read or write before session ``session`` + 1 (1: the first session)."""

    model_config = Strict
    session: int = Field(ge=1, le=100)
    text: Words


class Milestone(BaseModel):
    model_config = Strict
    id: Slug
    title: Words


class Plan(BaseModel):
    """A program's work between sessions."""

    model_config = Strict
    based_on: Text = Field(description="what the homework and milestones were written from")
    questionnaires: list[Questionnaire] = Field(default_factory=list, max_length=3)
    homework: list[Homework] = Field(default_factory=list, max_length=100)
    milestones: list[Milestone] = Field(default_factory=list, max_length=60)

    @model_validator(mode="after")
    def _distinct(self) -> Plan:
        for name, ids in (
            ("questionnaires", [q.id for q in self.questionnaires]),
            ("milestones", [m.id for m in self.milestones]),
            ("homework", [h.session for h in self.homework]),
        ):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{name}: each needs an id (or session) of its own")
        return self

    def questionnaire(self, questionnaire_id: str) -> Questionnaire | None:
        return next((q for q in self.questionnaires if q.id == questionnaire_id), None)

    def milestone(self, milestone_id: str) -> Milestone | None:
        return next((m for m in self.milestones if m.id == milestone_id), None)

    def homework_for(self, session: int) -> Homework | None:
        return next((h for h in self.homework if h.session == session), None)
