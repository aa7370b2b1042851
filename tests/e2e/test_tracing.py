"""One sign-up is one trace, across every service, to the email sent.

An applicant signs up, verifies the address, is approved, signs the consent and pays;
each of those is an HTTP request of its own (the applicant's, the coordinator's, the
payment provider's), and every service adds its work from events. The spans every
service wrote (TRACE_FILE) must show one trace holding the sign-up's request, the work
of all five services on that registration, and the confirmation email going out; the
later requests' own traces are linked from it. No span names the applicant, and the
registration's logs carry the trace id.
"""

from __future__ import annotations

from tests.e2e.harness import System
from tests.e2e.journey import WAIT_S, Journey
from tests.e2e.traces import Span, read_spans
from tests.integration.helpers_messaging import eventually

SIGN_UP_ROUTE = "POST /cohorts/{cohort_id}/registrations"
LATER_REQUESTS = {
    "registration": "POST /registrations/{registration_id}/verify-email",
    "consent": "POST /consents/{token}/sign",
    "payments": "POST /webhooks/wechatpay",
}


async def test_a_sign_up_is_one_trace_across_the_services_to_the_email_sent(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "traced")
    journey.applicants = journey.applicants[:1]
    (applicant,) = journey.applicants
    await journey.open_cohort()
    if await journey.sign_up_one(applicant) != "awaiting_consent":
        await journey.approve([applicant])
    await journey.sign_consents([applicant])
    await journey.pay([applicant], {})
    await journey.expect_enrolled([applicant])
    await journey.wait_confirmation_mail([applicant])
    rid = applicant.registration_id
    directory = system.log_dir / "traces"

    def the_trace() -> tuple[str, list[Span], list[Span]]:
        spans = read_spans(directory)
        about = {
            s.trace_id
            for s in spans
            if s.attributes.get("messaging.message.conversation_id") == rid
        }
        assert len(about) == 1, f"the registration's events are in {len(about)} traces"
        (trace_id,) = about
        ours = [s for s in spans if s.trace_id == trace_id]
        sent = [s for s in ours if s.name == "email send"]
        assert any(s.attributes.get("holdspace.template") == "confirmed" for s in sent), sorted(
            str(s.attributes.get("holdspace.template")) for s in sent
        )
        return trace_id, ours, spans

    trace_id, ours, spans = await eventually(
        the_trace, timeout=WAIT_S, what="the sign-up's trace, to the confirmation email"
    )

    # Every service did its part of this sign-up in the one trace.
    assert {s.service for s in ours} >= {
        "registration",
        "consent",
        "payments",
        "notifications",
        "progress",
    }
    # It began with the applicant's sign-up request, its root.
    (root,) = [s for s in ours if s.parent_id is None]
    assert (root.service, root.name) == ("registration", SIGN_UP_ROUTE)
    assert root.attributes["http.response.status_code"] == 202
    # Every span but the root has its parent in the trace: nothing dangles.
    ids = {s.span_id for s in ours}
    assert all(s.parent_id in ids for s in ours if s is not root)
    # Each event was published and then processed as a child of its publish.
    publishes = {s.span_id: s for s in ours if s.name.endswith(" publish")}
    processes = [s for s in ours if s.name.endswith(" process")]
    assert processes
    for s in processes:
        assert publishes[s.parent_id or ""].name.split()[0] == s.name.split()[0], s.name
    # The later requests (verify, sign, pay) have traces of their own, linked from it.
    linked = set().union(*(s.linked_traces for s in ours))
    for service, route in LATER_REQUESTS.items():
        requests = [s for s in spans if (s.service, s.name) == (service, route)]
        assert any(s.trace_id in linked for s in requests), route

    # Nothing in a span names the applicant or carries the signing token.
    token = (await journey.signing_token(applicant)).lower()
    text = "".join(p.read_text() for p in directory.glob("*.jsonl"))
    for personal in (applicant.email, applicant.name, token):
        assert personal.lower() not in text.lower()

    # The logs carry the trace id: an operator goes from a log line to the trace.
    (registration,) = system.processes["registration"]
    assert f'"trace_id": "{trace_id}"' in registration.log_text()

    # An operator without a trace viewer reads the same trace from the span files.
    code, out, err = await system.ops("registration", "timeline", rid, "--traces", str(directory))
    assert code == 0, err
    assert f"trace {trace_id}" in out
    for step in (SIGN_UP_ROUTE, "registration.submitted publish", "email send"):
        assert step in out, step
    assert applicant.email not in out
