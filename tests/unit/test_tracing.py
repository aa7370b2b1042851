"""Tracing (shared/tracing.py): what a span says, and how one flow stays one trace.

tests/e2e/test_tracing.py follows a whole sign-up through the running services; these
pin the parts: the HTTP span, the trace a flow's later events continue, the outgoing
request's header, the log line's ids.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import events as ev
from shared import tracing
from shared.aggregates import TRACES, Change
from shared.logs import configure_logging, get_logger
from tests.fakes import MemoryBus, MemoryDatabase

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing.configure("test").add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter


def trace_of(traceparent: str | None) -> str:
    assert traceparent
    return traceparent.split("-")[1]


def ids(traceparent: str | None) -> tuple[str, str]:
    assert traceparent
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return trace_id, span_id


def traced_app() -> FastAPI:
    app = FastAPI(telemetry=tracing.FASTAPI_TELEMETRY_OFF)

    @app.get("/consents/{token}")
    async def show(token: str) -> dict[str, str | None]:
        return {"traceparent": tracing.current_traceparent()}

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("the applicant typed Jane Doe")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(tracing.TracedRequests)
    return app


def test_a_request_span_continues_the_caller_and_is_named_by_its_route(spans) -> None:
    client = TestClient(traced_app())
    r = client.get("/consents/secret-token-123?language=en", headers={"traceparent": CALLER})
    assert trace_of(r.json()["traceparent"]) == trace_of(CALLER)
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /consents/{token}"
    assert span.kind is trace.SpanKind.SERVER
    assert format(span.parent.span_id, "016x") == CALLER.split("-")[2]
    assert span.attributes["http.route"] == "/consents/{token}"
    assert span.attributes["http.response.status_code"] == 200
    assert "secret-token-123" not in span.to_json()  # never the path, nor the query


def test_a_failed_request_is_marked_by_status_never_by_its_message(spans) -> None:
    client = TestClient(traced_app(), raise_server_exceptions=False)
    assert client.get("/broken").status_code == 500
    (span,) = spans.get_finished_spans()
    assert span.parent is None  # no caller: a trace of its own
    assert span.status.status_code is trace.StatusCode.ERROR
    assert "Jane" not in span.to_json()


def test_probes_make_no_spans(spans) -> None:
    assert TestClient(traced_app()).get("/healthz").status_code == 200
    assert spans.get_finished_spans() == ()


def test_an_event_carries_the_trace_of_the_work_that_recorded_it(spans) -> None:
    with tracing.span("work") as current:
        envelope = ev.make_envelope(
            ev.PaymentWaived(registration_id="r", payment_id="p"),
            source="test",
            correlation_id="r",
        )
    context = current.get_span_context()
    assert ids(envelope.traceparent) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


async def test_a_flows_later_events_continue_the_trace_of_its_first(spans) -> None:
    store = MemoryDatabase().store("cases", enveloper=ev.registration_enveloper("test"))
    waived = ev.PaymentWaived(registration_id="reg-1", payment_id="pay-1")
    with tracing.span("sign-up") as signing_up:
        await store.create({"_id": "cohort"}, emit=[waived])
    with tracing.span("approve") as approving:
        other = ev.PaymentWaived(registration_id="reg-2", payment_id="pay-2")
        await store.mutate("cohort", lambda d, _s: Change(set={"n": 1}, emit=[waived, other]))
    first, later, new_flow = MemoryBus(store).take()
    sign_up_trace = f"{signing_up.get_span_context().trace_id:032x}"
    approve_trace = f"{approving.get_span_context().trace_id:032x}"
    assert trace_of(first.traceparent) == sign_up_trace
    assert trace_of(later.traceparent) == sign_up_trace  # reg-1's flow: its first trace
    assert trace_of(new_flow.traceparent) == approve_trace  # reg-2 begins here
    doc = await store.get("cohort")
    assert set(doc[TRACES]) == {"reg-1", "reg-2"}
    # The bridge: a span of the flow's trace, linked to the request that moved it on.
    (bridge,) = [s for s in spans.get_finished_spans() if s.name == "cases change"]
    assert f"{bridge.context.trace_id:032x}" == sign_up_trace
    assert [f"{link.context.trace_id:032x}" for link in bridge.links] == [approve_trace]


async def test_an_outgoing_request_names_the_current_span_as_its_parent(spans) -> None:
    from web.clients import Services
    from web.settings import WebSettings

    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("traceparent"))
        return httpx.Response(200, json={})

    services = Services(
        WebSettings(holdspace_env="development"), transport=httpx.MockTransport(answer)
    )
    try:
        with tracing.span("page") as page:
            await services.http.get("http://registration.test/programs")
        await services.http.get("http://registration.test/programs")
    finally:
        await services.close()
    context = page.get_span_context()
    assert ids(seen[0]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert seen[1] is None


def test_log_lines_carry_the_trace_and_span_ids(spans) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = get_logger("test")
    with tracing.span("work") as current:
        log.info("inside")
    log.info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = current.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


async def test_an_email_sent_later_is_recorded_in_the_trace_of_the_event_that_asked(
    spans,
) -> None:
    """A retry is taken up in the sender's own loop, outside the span of the event that
    asked for the e-mail: what it records (notification.sent) still continues that
    trace, as does its send."""
    from notifications.domain.delivery import DeliveryFailure

    from tests.unit.test_handlers_notifications import Outbox, System, submitted

    class BusyAtFirst(Outbox):
        async def send(self, message, to) -> None:  # type: ignore[no-untyped-def]
            if not self.sent and not getattr(self, "refused", False):
                self.refused = True
                raise DeliveryFailure("smtp_451", temporary=True)
            await super().send(message, to)

    system = System()
    system.service.sender.email = BusyAtFirst()  # type: ignore[assignment]
    with tracing.span("registration.submitted process", parent=CALLER):
        await system.consumer.deliver(submitted())
    await system.settle()  # the first attempt: refused for now
    (did,) = system.stores.deliveries.collection.docs  # type: ignore[attr-defined]
    system.stores.deliveries.collection.docs[did]["due_at"] = datetime(2000, 1, 1, tzinfo=UTC)  # type: ignore[attr-defined]
    spans.clear()
    await system.service.sender.deliver(did)  # the due runner's call, in no span
    (sent,) = system.bus.take("notification.sent")
    assert trace_of(sent.traceparent) == trace_of(CALLER)
    (send,) = [s for s in spans.get_finished_spans() if s.name == "email send"]
    assert format(send.context.trace_id, "032x") == trace_of(CALLER)
