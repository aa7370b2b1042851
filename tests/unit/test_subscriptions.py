"""Handlers declared once, typed by the event they take (shared/subscriptions.py)."""

from __future__ import annotations

import pytest
from consent.handlers import subscriptions as consent_subscriptions
from notifications.handlers import subscriptions as notifications_subscriptions
from payments.handlers import subscriptions as payments_subscriptions
from pydantic import ValidationError
from registration.handlers import subscriptions as registration_subscriptions

from shared import events as ev
from shared.events import Envelope
from shared.subscriptions import Subscriptions
from shared.topology import EVERY_SERVICE_TAKES, SERVICES, subscriptions


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []


def envelope_of(data: ev.EventData) -> Envelope:
    return ev.make_envelope(data, source="test", correlation_id="c-1")


def withdrawn() -> ev.RegistrationWithdrawn:
    return ev.RegistrationWithdrawn(
        registration_id="r-1", cohort_id="c-1", previous_status="held", refundable=True
    )


def test_the_annotation_says_which_event_types_a_handler_takes() -> None:
    subs: Subscriptions[Recorder] = Subscriptions("test")

    @subs.on
    async def ended(
        target: Recorder,
        event: ev.RegistrationWithdrawn | ev.RegistrationExpired,
        envelope: Envelope,
    ) -> None:
        target.seen.append((type(event).__name__, envelope.id))

    assert subs.event_types == ("registration.expired", "registration.withdrawn")
    assert subs.handler_for("registration.withdrawn") is ended


async def test_bound_handlers_get_the_validated_model_and_the_envelope() -> None:
    subs: Subscriptions[Recorder] = Subscriptions("test")

    @subs.on
    async def ended(target: Recorder, event: ev.RegistrationWithdrawn, envelope: Envelope) -> None:
        assert event.refundable is True
        target.seen.append((type(event).__name__, envelope.id))

    recorder = Recorder()
    dispatch = subs.bind(recorder)
    env = envelope_of(withdrawn())
    await dispatch["registration.withdrawn"](env)
    assert recorder.seen == [("RegistrationWithdrawn", env.id)]
    broken = env.model_copy(update={"data": {"registration_id": "r-1"}})
    with pytest.raises(ValidationError):  # retried, then dead-lettered, by the consumer
        await dispatch["registration.withdrawn"](broken)
    assert len(recorder.seen) == 1


def test_a_handler_without_an_event_model_or_taking_a_type_twice_is_refused() -> None:
    subs: Subscriptions[Recorder] = Subscriptions("test")

    async def untyped(target: Recorder, event: dict, envelope: Envelope) -> None: ...

    async def family(target: Recorder, event: ev.RegistrationEvent, envelope: Envelope) -> None: ...

    async def two_args(target: Recorder, event: ev.RegistrationExpired) -> None: ...

    async def expired(
        target: Recorder, event: ev.RegistrationExpired, envelope: Envelope
    ) -> None: ...

    for bad in (untyped, family, two_args):
        with pytest.raises(TypeError):
            subs.on(bad)
    subs.on(expired)
    with pytest.raises(TypeError, match="twice"):
        subs.on(expired)


def test_the_topology_is_what_the_services_handlers_declare() -> None:
    declared = {
        "registration": registration_subscriptions,
        "consent": consent_subscriptions,
        "payments": payments_subscriptions,
        "notifications": notifications_subscriptions,
    }
    assert tuple(subscriptions()) == SERVICES
    for name, registry in declared.items():
        assert registry.service == name
        # What its handlers declare, and what every service takes (bound by the factory).
        expected = tuple(sorted({*registry.event_types, *EVERY_SERVICE_TAKES}))
        assert subscriptions()[name] == expected
        assert "staff.access_revoked" in subscriptions()[name]


def test_consent_comes_before_payment() -> None:
    # Payments asks for money on consent.signed and on nothing registration says alone.
    assert "consent.signed" in payments_subscriptions.event_types
    assert "registration.approved" not in payments_subscriptions.event_types


def test_a_stale_install_missing_a_services_registry_is_named(monkeypatch) -> None:
    from shared import topology

    found = [e for e in topology.entry_points(group=topology.ENTRY_POINTS) if e.name != "payments"]
    monkeypatch.setattr(topology, "entry_points", lambda group: found)
    topology.subscriptions.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"\['payments'\].*scripts/bootstrap"):
            topology.subscriptions()
    finally:
        topology.subscriptions.cache_clear()


def test_an_event_about_no_registration_cannot_be_enveloped_as_one() -> None:
    flagged = ev.PaymentFlagged(flag_id="f-1", reason_code="unknown_reference", method="manual")
    with pytest.raises(ValueError, match="names no registration"):
        ev.registration_enveloper("holdspace/test")(flagged, None)


def test_a_service_bound_to_other_handlers_than_its_install_declares_does_not_start() -> None:
    from shared.topology import check_bindings

    declared = {*payments_subscriptions.event_types, "staff.access_revoked"}
    check_bindings("payments", declared)  # agreeing: starts
    with pytest.raises(RuntimeError, match=r"payments.*\['consent.signed'\].*scripts/bootstrap"):
        check_bindings("payments", declared - {"consent.signed"})
    with pytest.raises(RuntimeError, match=r"\['payment.confirmed'\]"):
        check_bindings("payments", declared | {"payment.confirmed"})
