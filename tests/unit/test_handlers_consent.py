"""Consent's handlers and signing on in-memory collections: no broker, no database.

What is checked is what the applicant and the audit trail see: one signing link per
approval however often it is delivered, none when the registration ended first, a link
that signs once, and exactly one verified record in the chain per signature.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from consent.domain.forms import FormSpec
from consent.domain.signing import SignatureIn
from consent.forms_admin import FormAdmin
from consent.handlers import subscriptions
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import ConsentStores, Sealer
from consent.views import ConsentViews

from shared import errors
from shared import events as ev
from shared.security import FieldCipher, decode_key
from tests.fakes import MemoryBus, MemoryConsumer, MemoryDatabase

NOW = datetime.now(UTC)
REF = "recovery-group-consent"


class System:
    def __init__(self) -> None:
        settings = ConsentSettings()
        cipher = FieldCipher.from_settings(settings)
        db = MemoryDatabase(unique={"signatures": ["signature_id"]})
        self.stores = ConsentStores.open(
            db.store,
            db,
            cipher,
            decode_key(settings.consent_chain_key, setting="CONSENT_CHAIN_KEY"),
        )
        sealer = Sealer(cipher)
        self.service = ConsentService(self.stores, sealer, settings)
        self.views = ConsentViews(self.stores, sealer)
        self.consumer = MemoryConsumer(subscriptions.bind(self.service))
        self.bus = MemoryBus(self.stores.requests)

    async def publish_form(self) -> dict:
        return await FormAdmin(self.stores).create_form(
            FormSpec(
                ref=REF,
                language="zh",
                title="参加小组的知情同意",
                body_markdown="小组的保密约定……",
                clauses=[{"id": "confidentiality", "text": "我会对组员的分享保密。"}],
                publish=True,
            ),
            NOW,
        )


def approved(rid: str) -> ev.RegistrationApproved:
    return ev.RegistrationApproved(
        registration_id=rid,
        cohort_id="cohort-1",
        program_id="program-1",
        consent_form_ref=REF,
        hold_expires_at=NOW + timedelta(days=3),
    )


def signing_token(system: System) -> str:
    [requested] = system.bus.take("consent.requested")
    data = requested.payload()
    assert isinstance(data, ev.ConsentRequested)
    return data.signing_url.rsplit("/", 1)[1]


async def test_one_signing_link_per_approval_however_often_it_is_delivered() -> None:
    system = System()
    await system.publish_form()
    envelope = await system.consumer.send(approved("reg-1"))
    await asyncio.gather(*(system.consumer.deliver(envelope) for _ in range(3)))
    assert len(system.bus.take("consent.requested")) == 1


async def test_no_link_when_the_registration_ended_before_the_approval_arrived() -> None:
    system = System()
    await system.publish_form()
    await system.consumer.send(
        ev.RegistrationWithdrawn(
            registration_id="reg-1", cohort_id="cohort-1", previous_status="approved"
        )
    )
    await system.consumer.send(approved("reg-1"))
    assert system.bus.take("consent.requested") == []


async def test_a_link_signs_once_and_leaves_one_verified_record() -> None:
    system = System()
    form = await system.publish_form()
    await system.consumer.send(approved("reg-1"))
    token = signing_token(system)
    shown = await system.service.to_sign(token, None, "zh-CN", NOW)
    given = SignatureIn(
        text_sha256=shown["form"]["text_sha256"],
        typed_name="林",
        acknowledged_clauses=["confidentiality"],
        agree_to_sign_electronically=True,
    )
    assert shown["form"]["form_id"] == form["_id"] and shown["form"]["language"] == "zh"
    await system.service.sign(token, given, ip="127.0.0.1", user_agent="test", now=NOW)
    with pytest.raises(errors.Conflict):  # the same link again: "already used"
        await system.service.sign(token, given, ip="127.0.0.1", user_agent="test", now=NOW)
    assert len(system.bus.take("consent.signed")) == 1
    evidence = await system.views.evidence("reg-1")
    assert evidence["verified"] is True and evidence["record"]["seq"] == 1
    assert evidence["record"]["typed_name"] == "林"  # opened for the coordinator only
