"""A burst of 50 sign-ups with the retry budget the integration tests give every service.

tests/services.py runs services with MAX_ATTEMPTS=3 and RETRY_BASE_MS=50: a failing
handler is tried three times within about 0.15 s, then dead-lettered. Registration
publishes registration.submitted and then registration.waitlisted for a sign-up, in
order; notifications takes deliveries concurrently (prefetch), so the waitlisted event
is often handled before the submitted one has written the applicant's contact, fails
with RecipientUnknown, and is retried until it is dead-lettered: the applicant is never
told they are on the waitlist. Every applicant must get their messages and nothing
may be dead-lettered, whatever the retry budget.

Only registration and notifications run here: no other service takes part in a sign-up.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import System
from tests.e2e.journey import Journey, create_program
from tests.integration.helpers_messaging import eventually


@pytest.fixture(scope="module")
async def burst_system(
    mongodb_url, rabbitmq_url, mongo_client, tmp_path_factory
) -> AsyncIterator[System]:
    s = System(
        mongodb_url,
        rabbitmq_url,
        mongo_client,
        tmp_path_factory.mktemp("e2e-burst"),
        services=("registration", "notifications"),
        retry_budget="tests",
    )
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def test_a_burst_of_sign_ups_with_short_retries_loses_no_message(
    burst_system: System,
) -> None:
    system = burst_system
    assert system.env["MAX_ATTEMPTS"] == "3" and system.env["RETRY_BASE_MS"] == "50"
    journey = Journey(system, await create_program(system), "burst")
    await journey.open_cohort()
    await journey.sign_up()
    want = {a.email: Counter(["verify_email", "signup_received"]) for a in journey.applicants}
    for a in journey.waitlisted:
        want[a.email]["waitlisted"] += 1

    async def settled() -> bool:
        dead, _ = (await system.queue_figures())[system.dlq("notifications")]
        if dead:
            return True  # no use waiting: a message is lost
        got = {to: Counter(r.template for r in rs) for to, rs in journey.mail_of().items()}
        assert got == want, f"{sum(map(len, got.values()))} of 92 messages so far"
        return True

    await eventually(settled, timeout=60, interval=0.3, what="every applicant told")
    code, letters = await system.ops_json("dlq", "list", "notifications")
    lost = [{k: d[k] for k in ("type", "attempts", "last_error")} for d in letters["dead_letters"]]
    assert letters["count"] == 0, f"{letters['count']} messages lost: {json.dumps(lost)}"
    got = {to: Counter(r.template for r in rs) for to, rs in journey.mail_of().items()}
    assert got == want
