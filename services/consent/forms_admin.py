"""Coordinators' consent forms: create, edit the draft, publish a version, and ask
signers of older versions to sign the current one.

Published versions never change: editing touches only the draft, and publishing
freezes it as a new version with its text hash. Asking for re-consent marks the form;
the service's due work then reopens each affected request (service.run_reconsent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from consent.domain import forms
from consent.domain.forms import FormContent, FormProblem, FormSpec
from consent.store import ConsentStores
from shared.aggregates import Change
from shared.errors import Conflict


class FormAdmin:
    def __init__(self, stores: ConsentStores) -> None:
        self.stores = stores

    async def create_form(self, spec: FormSpec, now: datetime) -> dict[str, Any]:
        doc = forms.new_form(spec, now)
        try:
            await self.stores.forms.create(doc)
        except DuplicateKeyError:
            raise Conflict("ref", "a form for this ref and language exists already") from None
        if spec.publish:
            return await self.publish(doc["_id"], now)
        return await self.stores.form(doc["_id"])

    async def edit_draft(self, form_id: str, content: FormContent) -> dict[str, Any]:
        await self.stores.form(form_id)
        outcome = await self.stores.forms.mutate(
            form_id, lambda _doc, _s: Change(set={"draft": content.model_dump()})
        )
        return outcome.doc

    async def publish(self, form_id: str, now: datetime) -> dict[str, Any]:
        await self.stores.form(form_id)

        def decide(doc: dict[str, Any], _state: Any) -> Change:
            return Change(set=forms.publish(doc, now))

        outcome = await self.stores.forms.mutate(form_id, decide)
        return outcome.doc

    async def ask_reconsent(
        self, form_id: str, *, include_confirmed: bool, now: datetime
    ) -> dict[str, Any]:
        await self.stores.form(form_id)

        def decide(doc: dict[str, Any], _state: Any) -> Change:
            if not doc["current_version"]:
                raise FormProblem("form_id", "the form has no published version")
            return Change(
                set=forms.reconsent_request(
                    doc, doc["current_version"], include_confirmed=include_confirmed, now=now
                )
            )

        return (await self.stores.forms.mutate(form_id, decide)).doc
