"""Events on the wire (shared/wire.py): a personal event's data travels sealed to its id;
every other event travels as it is; what cannot be opened is refused, never guessed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shared import events as ev
from shared.messaging import PoisonMessage, build_message, parse_envelope
from shared.security import FieldCipher
from shared.wire import SEALED, UnreadableBody, body_of, open_body

CIPHER = FieldCipher({"k1": b"k" * 32}, "k1")
SECRETS = ("Canary Lin", "canary@example.org", "wx_canary", "tok-canary-123")


def submitted(event_id: str = "e1") -> ev.Envelope:
    return ev.make_envelope(
        ev.RegistrationSubmitted(
            registration_id="r1",
            cohort_id="c1",
            program_id="p1",
            contact=ev.Contact(
                name=SECRETS[0], email=SECRETS[1], chat_handle=SECRETS[2], access_token=SECRETS[3]
            ),
            submitted_at=datetime(2026, 12, 1, tzinfo=UTC),
        ),
        source="holdspace/registration",
        correlation_id="r1",
        subject="r1",
        event_id=event_id,
    )


def delivered(body: bytes) -> SimpleNamespace:
    return SimpleNamespace(body=body)


def test_the_events_that_carry_personal_data_are_the_personal_ones() -> None:
    personal = {t for t, model in ev.EVENT_TYPES.items() if model.personal}
    assert personal == {
        "registration.submitted",
        "registration.email_verification_requested",
        # With the cohort's make-up, an unmet wish hints at the applicant's gender.
        "registration.composition_unmet",
        # A meeting's link and passcode let anyone into a confidential group.
        "cohort.joining_changed",
        "consent.requested",
        # Which step of their recovery a participant just took.
        "progress.milestone_reached",
    }
    assert not any(ev.EVENT_TYPES[t].exchange is ev.Exchange.public for t in personal)


def test_a_personal_event_travels_sealed_and_opens_as_it_was_sent() -> None:
    envelope = submitted()
    body = build_message(envelope, cipher=CIPHER).body
    for secret in SECRETS:
        assert secret.encode() not in body
    wire = json.loads(body)
    assert wire["data"] == {} and wire[SEALED].startswith("v1.k1.")
    assert (wire["id"], wire["type"], wire["subject"]) == ("e1", "registration.submitted", "r1")
    assert parse_envelope(delivered(body), CIPHER) == envelope


def test_sealed_data_moved_to_another_event_does_not_open() -> None:
    wire = json.loads(body_of(submitted("e1"), CIPHER))
    wire["id"] = "e2"
    with pytest.raises(UnreadableBody):
        open_body(wire, CIPHER)
    with pytest.raises(PoisonMessage, match="does not open"):
        parse_envelope(delivered(json.dumps(wire).encode()), CIPHER)


def test_a_consumer_without_the_key_refuses_a_sealed_event() -> None:
    body = body_of(submitted(), CIPHER)
    with pytest.raises(PoisonMessage, match="no key"):
        parse_envelope(delivered(body), None)
    stranger = FieldCipher({"k1": b"s" * 32}, "k1")
    with pytest.raises(PoisonMessage, match="does not open"):
        parse_envelope(delivered(body), stranger)


def test_a_personal_event_is_never_published_in_clear() -> None:
    with pytest.raises(ValueError, match="personal data"):
        build_message(submitted())


def test_other_events_travel_as_they_are() -> None:
    envelope = ev.make_envelope(
        ev.RegistrationWithdrawn(registration_id="r1", cohort_id="c1", previous_status="confirmed"),
        source="holdspace/registration",
        correlation_id="r1",
    )
    body = build_message(envelope).body
    assert json.loads(body) == json.loads(envelope.model_dump_json())
    assert SEALED not in json.loads(body)
    assert parse_envelope(delivered(body)) == envelope
