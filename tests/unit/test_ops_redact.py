"""What the ops tool shows of message bodies and stored documents: never personal data."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared import events as ev
from shared.logs import REDACTED
from shared.ops.redact import redact, redact_envelope, safe_fields
from shared.security import FieldCipher

CANARIES = ("Canary Lin", "canary@example.org", "wx_canary", "I feel unsafe at night")


def submitted() -> dict:
    envelope = ev.make_envelope(
        ev.RegistrationSubmitted(
            registration_id="r1",
            cohort_id="c1",
            program_id="p1",
            contact=ev.Contact(name=CANARIES[0], email=CANARIES[1], chat_handle=CANARIES[2]),
            submitted_at=datetime(2026, 12, 1, tzinfo=UTC),
        ),
        source="holdspace/registration",
        correlation_id="r1",
        subject="r1",
    )
    return json.loads(envelope.model_dump_json())


def test_an_envelope_keeps_its_attributes_and_ids_and_loses_the_contact() -> None:
    body = submitted()
    shown = redact_envelope(body)
    for key in ("id", "type", "source", "time", "correlationid", "subject", "dataschema"):
        assert shown[key] == body[key]
    assert shown["data"]["registration_id"] == "r1"
    assert shown["data"]["cohort_id"] == "c1"
    assert shown["data"]["scholarship_requested"] is False
    assert shown["data"]["contact"]["name"] == REDACTED
    assert shown["data"]["contact"]["email"] == REDACTED
    assert shown["data"]["contact"]["chat_handle"] == REDACTED
    assert shown["data"]["contact"]["language"] == "en"
    text = json.dumps(shown)
    assert not any(c in text for c in CANARIES)


def test_personal_values_go_whatever_their_key_and_at_any_depth() -> None:
    cipher = FieldCipher({"k1": b"k" * 32}, "k1")
    sealed = cipher.encrypt(CANARIES[3], context="x")
    value = {
        "notes": [{"contact_info": f"write to {CANARIES[1]}"}, {"blob": sealed}],
        "deep": {"deeper": {"safety_answers": {"q1": True}, "reason": CANARIES[3]}},
        "signing_url": "https://example.org/sign?token=abc",
        "access_token_hash": "abc",
        "sealed_data": sealed,
        "count": 3,
    }
    shown = redact(value)
    assert shown == {
        "notes": [{"contact_info": REDACTED}, {"blob": REDACTED}],
        "deep": {"deeper": {"safety_answers": REDACTED, "reason": REDACTED}},
        "signing_url": REDACTED,
        "access_token_hash": REDACTED,
        "sealed_data": REDACTED,
        "count": 3,
    }


def test_a_body_that_is_not_an_object_is_redacted_as_a_value() -> None:
    assert redact_envelope(CANARIES[1]) == REDACTED
    assert redact_envelope([{"email": CANARIES[1]}]) == [{"email": REDACTED}]
    assert redact_envelope({"data": CANARIES[0], "id": "e1"}) == {"data": REDACTED, "id": "e1"}


def test_stored_documents_show_only_allow_listed_fields() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    doc = {
        "_id": "r1",
        "status": "failed",
        "cohort_id": "c1",
        "created_at": now,
        "attempts": 5,
        "error_code": "smtp_5xx",
        "sealed": {"to": "v1.k1.abc.def", "context": "v1.k1.abc.def"},
        "email_index": "abcdef",
        "dedupe_key": "c1:abcdef",
        "flagged": True,  # a safety flag is sensitive: not on the allow-list
        "language": "en",
        "note": CANARIES[3],
        "amount": {"amount_minor": 90000, "currency": "CNY"},
        "contact": {"name": CANARIES[0], "registration_id": "r1"},
        "outbox": [{"id": "e1", "data": {"email": CANARIES[1]}}],
        "inbox": ["e0"],
        "has_outbox": True,
        "history": [{"status": "pending"}, {"status": "failed"}],
        "tag_ids": ["a", CANARIES[1]],
        "payer_id": CANARIES[1],
        "sealed_note_id": "v1.k1.abc.def",
    }
    assert safe_fields(doc) == {
        "_id": "r1",
        "status": "failed",
        "cohort_id": "c1",
        "created_at": now.isoformat(),
        "attempts": 5,
        "error_code": "smtp_5xx",
        "amount": {"amount_minor": 90000, "currency": "CNY"},
        "contact": {"registration_id": "r1"},
        "tag_ids": ["a"],
    }
