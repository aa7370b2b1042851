"""Consent forms and their frozen versions (pure: no I/O).

A form is one program's consent text in one language (``<ref>.<language>``). Its
draft may change; publishing freezes the draft as the next version, with the
SHA-256 of its *canonical text*: a JSON text of the form's id, version, language,
title, body and clauses, Unicode NFC, ``\\n`` line ends, no trailing spaces, keys
sorted. Anyone holding the canonical text can recompute the hash; a published
version is never edited, only superseded by the next one.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import Conflict

Language = Literal["en", "zh"]
LANGUAGES: tuple[str, ...] = ("en", "zh")
REF_PATTERN = r"^[a-z0-9][a-z0-9-]{0,79}$"
CLAUSE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"


class FormProblem(Conflict):
    """A form change that is not allowed (the field at fault, a message)."""


class Clause(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(pattern=CLAUSE_ID_PATTERN, description="stable id, acknowledged by id")
    text: str = Field(min_length=1, max_length=4000)


class FormContent(BaseModel):
    """What a coordinator writes: the text to sign and the clauses to acknowledge."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    body_markdown: str = Field(min_length=1, max_length=40_000)
    clauses: list[Clause] = Field(min_length=1, max_length=30)

    @field_validator("clauses")
    @classmethod
    def _unique_ids(cls, clauses: list[Clause]) -> list[Clause]:
        ids = [c.id for c in clauses]
        if len(set(ids)) != len(ids):
            raise ValueError("clause ids must be unique")
        return clauses


class FormSpec(FormContent):
    """A new form: for a program (by its id) or under a named ref the program points to."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["ref"], "properties": {"ref": {"type": "string"}}},
                {"required": ["program_id"], "properties": {"program_id": {"type": "string"}}},
            ]
        }
    )

    ref: str | None = Field(
        None, pattern=REF_PATTERN, description="the program's consent_form_ref; default from id"
    )
    program_id: str | None = Field(None, min_length=1, max_length=100)
    language: Language
    publish: bool = Field(False, description="publish the text as version 1 at once")

    @model_validator(mode="after")
    def _needs_a_key(self) -> FormSpec:
        if self.ref is None and self.program_id is None:
            raise ValueError("give ref or program_id")
        return self

    @property
    def resolved_ref(self) -> str:
        return self.ref or ref_for_program(self.program_id or "")

    def content(self) -> FormContent:
        return FormContent(title=self.title, body_markdown=self.body_markdown, clauses=self.clauses)


def ref_for_program(program_id: str) -> str:
    """The ref a program without its own consent_form_ref uses."""
    return f"program-{program_id}".lower()


def form_id(ref: str, language: str) -> str:
    return f"{ref}.{language}"


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def canonical_text(*, form_id: str, version: int, language: str, content: FormContent) -> str:
    return json.dumps(
        {
            "form_id": form_id,
            "version": version,
            "language": language,
            "title": normalise(content.title),
            "body_markdown": normalise(content.body_markdown),
            "clauses": [{"id": c.id, "text": normalise(c.text)} for c in content.clauses],
        },
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def same_text(a: FormContent, b: FormContent) -> bool:
    probe = {"form_id": "", "version": 0, "language": ""}
    return canonical_text(**probe, content=a) == canonical_text(**probe, content=b)


def new_form(spec: FormSpec, now: datetime) -> dict[str, Any]:
    """The fields of a new form document (a draft; publishing is a separate step)."""
    ref = spec.resolved_ref
    return {
        "_id": form_id(ref, spec.language),
        "ref": ref,
        "program_id": spec.program_id,
        "language": spec.language,
        "draft": spec.content().model_dump(),
        "current_version": 0,
        "versions": [],
        "reconsent_requests": [],
        "reconsent_pending": False,
        "created_at": now,
    }


def publish(form: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The fields that freeze the draft as the next version (versions are only appended).

    Publishing a draft whose text equals the current version's is refused: it would
    ask every signer to sign the same words again.
    """
    draft = FormContent.model_validate(form["draft"])
    current = current_version(form)
    if current is not None and same_text(draft, content_of(current)):
        raise FormProblem("draft", "the draft is the same text as the current version")
    version = form["current_version"] + 1
    text = canonical_text(
        form_id=form["_id"], version=version, language=form["language"], content=draft
    )
    frozen = {
        "version": version,
        **draft.model_dump(),
        "language": form["language"],
        "canonical_text": text,
        "text_sha256": sha256_hex(text),
        "published_at": now,
    }
    changes: dict[str, Any] = {
        "versions": [*form["versions"], frozen],
        "current_version": version,
    }
    if version > 1:
        changes.update(reconsent_request(form, version, include_confirmed=False, now=now))
    return changes


def reconsent_request(
    form: dict[str, Any], version: int, *, include_confirmed: bool, now: datetime
) -> dict[str, Any]:
    """Ask everyone who signed an older version to sign ``version`` (done by a due job)."""
    request = {
        "id": f"v{version}-{'all' if include_confirmed else 'open'}-{int(now.timestamp() * 1e3)}",
        "version": version,
        "include_confirmed": include_confirmed,
        "requested_at": now,
    }
    return {
        "reconsent_requests": [*form.get("reconsent_requests", []), request],
        "reconsent_pending": True,
    }


def reconsent_done(form: dict[str, Any], request_id: str) -> dict[str, Any]:
    left = [r for r in form.get("reconsent_requests", []) if r["id"] != request_id]
    return {"reconsent_requests": left, "reconsent_pending": bool(left)}


def current_version(form: dict[str, Any]) -> dict[str, Any] | None:
    return version_of(form, form.get("current_version", 0))


def version_of(form: dict[str, Any], version: int) -> dict[str, Any] | None:
    for v in form.get("versions", []):
        if v["version"] == version:
            return v
    return None


def content_of(version: dict[str, Any]) -> FormContent:
    return FormContent.model_validate({k: version[k] for k in FormContent.model_fields})


def version_intact(version: dict[str, Any]) -> bool:
    """The stored canonical text still hashes to the stored hash, and matches the fields."""
    try:
        content = content_of(version)
        expected = json.loads(version["canonical_text"])
    except (ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
        return False
    rebuilt = canonical_text(
        form_id=expected.get("form_id", ""),
        version=version["version"],
        language=version["language"],
        content=content,
    )
    return (
        sha256_hex(version["canonical_text"]) == version["text_sha256"]
        and rebuilt == version["canonical_text"]
    )


def choose_language(available: list[str], asked: str | None, accept_language: str | None) -> str:
    """The query's language, else the first of Accept-Language we have, else English."""
    if asked and asked in available:
        return asked
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary in available:
            return primary
    return "en" if "en" in available else sorted(available)[0]
