"""A cohort cancelled through the use case (registration/cohorts.py) on in-memory
stores, and a sign-up whose address is verified only after the cancellation."""

from __future__ import annotations

from registration.cohorts import CohortControls
from registration.domain.ledger import Status

from tests.unit.test_handlers_registration import NOW, System, application


async def test_a_sign_up_verified_after_the_cancellation_is_ended_and_told() -> None:
    system = System()
    cohort_id = await system.cohort()
    early = await system.sign_up(cohort_id, application("ann@example.org"), "key-early-1")
    late = await system.signups.sign_up(cohort_id, application("bo@example.org"), "key-late-1", NOW)
    token = system.link_token(late.registration_id)
    system.bus.take()

    done = await CohortControls(system.stores).cancel(cohort_id, NOW, "coord-1")
    assert done["ended"] == 1
    assert await system.status(cohort_id, early.registration_id) == Status.withdrawn

    assert token is not None
    verified = await system.verify(late.registration_id, token)
    assert verified.status == Status.withdrawn
    told = [e.data for e in system.bus.take("registration.withdrawn")]
    assert [(d["registration_id"], d["cohort_cancelled"]) for d in told] == [
        (early.registration_id, True),
        (late.registration_id, True),
    ]
    assert system.bus.take("registration.submitted") == []  # no sign-up receipt after it
    again = await system.verify(late.registration_id, token)  # the link followed twice
    assert again.status == Status.withdrawn and system.bus.take("registration.withdrawn") == []
    # On the ledger: the reconciler does not take it for a sign-up left half-way.
    assert await system.status(cohort_id, late.registration_id) == Status.withdrawn
