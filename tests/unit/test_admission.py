"""Admission control (shared/admission.py): N requests at once, a bounded wait, then 503.

The middleware is driven as ASGI, in this loop, by an app whose requests block until the
test releases them; so the counts are exact, not a matter of timing. Also: the other
ways overload reaches a route (the database's pool, its own load shedding) answer 503
with Retry-After too, and the factory stacks admission inside RequestContext.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pymongo.errors import OperationFailure, WaitQueueTimeoutError, WTimeoutError
from starlette.types import Message, Receive, Scope, Send

from shared.admission import Admission
from shared.app import RequestContext, create_service_app
from shared.problems import PROBLEM_JSON, install_problem_handlers
from shared.settings import ServiceSettings

PROBES = ("/healthz", "/readyz", "/metrics")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    read_body: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Blocking:
    """An app whose requests (probes aside) wait for ``release``; counts who is inside."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    inside: int = 0
    most: int = 0
    entered: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] not in PROBES:
            self.entered += 1
            self.inside += 1
            self.most = max(self.most, self.inside)
            try:
                await self.release.wait()
            finally:
                self.inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def admission(app: Any, *, max_in_flight: int, max_waiting: int, wait_s: float) -> Admission:
    return Admission(
        app,
        service=f"t-{uuid.uuid4().hex[:8]}",
        max_in_flight=max_in_flight,
        max_waiting=max_waiting,
        wait_s=wait_s,
    )


async def call(app: Any, path: str = "/cohorts/c1/registrations") -> Answer:
    sent: list[Message] = []
    read = False

    async def receive() -> Message:
        nonlocal read
        read = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    started = time.perf_counter()
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(sent[0]["status"], headers, body, time.perf_counter() - started, read)


async def until(condition: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def refused(service: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "holdspace_http_refused_total", {"service": service, "reason": reason}
    )
    return value or 0.0


def assert_refused_as_a_problem(answer: Answer) -> None:
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json()
    assert body["status"] == 503 and body["title"] == "Service Unavailable"
    assert body["retry_after"] == 1 and "retry" in body["detail"]
    assert not answer.read_body  # refused without reading what was sent


async def test_n_at_once_a_bounded_few_wait_the_rest_are_refused_at_once() -> None:
    app = Blocking()
    gate = admission(app, max_in_flight=4, max_waiting=2, wait_s=0.2)
    tasks = [asyncio.create_task(call(gate)) for _ in range(10)]
    await until(lambda: app.inside == 4 and gate.waiting == 2)
    # Four beyond the waiting places are answered without waiting at all.
    await until(lambda: sum(t.done() for t in tasks) >= 4)
    assert refused(gate.service, "queue_full") == 4
    await asyncio.sleep(0.3)  # past the wait: the two waiting are refused too
    done = [t.result() for t in tasks if t.done()]
    assert len(done) == 6 and app.entered == 4
    for answer in done:
        assert_refused_as_a_problem(answer)
        assert answer.seconds < 0.2 + 0.5  # within the wait, give or take the scheduler
    assert refused(gate.service, "queue_full") == 4
    assert refused(gate.service, "wait_timeout") == 2

    app.release.set()
    answers = await asyncio.gather(*tasks)
    assert sorted(a.status for a in answers) == [200] * 4 + [503] * 6
    assert app.most == 4 and (gate.in_flight, gate.waiting) == (0, 0)


async def test_a_request_that_gets_a_slot_within_the_wait_is_served() -> None:
    app = Blocking()
    gate = admission(app, max_in_flight=1, max_waiting=4, wait_s=2.0)
    first = asyncio.create_task(call(gate))
    await until(lambda: app.inside == 1)
    second = asyncio.create_task(call(gate))
    await until(lambda: gate.waiting == 1)
    await asyncio.sleep(0.1)
    app.release.set()
    one, two = await asyncio.gather(first, second)
    assert (one.status, two.status) == (200, 200)
    assert 0.1 <= two.seconds < 2.0 and two.read_body is False
    assert app.most == 1 and (gate.in_flight, gate.waiting) == (0, 0)


async def test_waiters_get_their_slots_in_arrival_order() -> None:
    order: list[int] = []
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        order.append(int(scope["path"].rsplit("/", 1)[1]))
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gate = admission(app, max_in_flight=1, max_waiting=5, wait_s=2.0)
    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(call(gate, f"/x/{n}")))
        await until(lambda n=n: len(order) == 1 and gate.waiting == n)
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_the_probes_and_the_scrape_are_never_held_back() -> None:
    app = Blocking()
    gate = admission(app, max_in_flight=1, max_waiting=0, wait_s=0.2)
    holder = asyncio.create_task(call(gate))
    await until(lambda: app.inside == 1)
    for path in PROBES:
        answer = await asyncio.wait_for(call(gate, path), 1)
        assert answer.status == 200, path
    assert_refused_as_a_problem(await call(gate, "/cohorts/c1"))
    app.release.set()
    await holder


async def test_a_handler_that_fails_gives_its_slot_back() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    gate = admission(failing, max_in_flight=2, max_waiting=0, wait_s=0)
    for _ in range(5):
        with pytest.raises(RuntimeError):
            await call(gate)
    assert (gate.in_flight, gate.waiting) == (0, 0)
    await assert_all_slots_free(gate)


async def test_a_client_gone_gives_its_slot_back() -> None:
    async def reads_a_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.disconnect"  # returns, answers nothing

    gate = admission(reads_a_disconnect, max_in_flight=2, max_waiting=0, wait_s=0)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent to a client that is gone")

    for _ in range(5):
        await gate(scope, gone, send)
    assert (gate.in_flight, gate.waiting) == (0, 0)
    await assert_all_slots_free(gate)


async def test_cancelled_requests_inside_or_waiting_leak_no_slot() -> None:
    # The server cancels a request's task when it shuts down (or when a client is gone,
    # for some stacks): inside, or while waiting for a slot.
    app = Blocking()
    gate = admission(app, max_in_flight=2, max_waiting=4, wait_s=5.0)
    inside = [asyncio.create_task(call(gate)) for _ in range(2)]
    await until(lambda: app.inside == 2)
    waiting = [asyncio.create_task(call(gate)) for _ in range(3)]
    await until(lambda: gate.waiting == 3)
    for task in [*inside, waiting[0]]:
        task.cancel()
    await asyncio.gather(*inside, waiting[0], return_exceptions=True)
    # The two freed slots go to the two still waiting, in order.
    await until(lambda: app.inside == 2 and gate.waiting == 0)
    app.release.set()
    assert [a.status for a in await asyncio.gather(*waiting[1:])] == [200, 200]
    assert (gate.in_flight, gate.waiting) == (0, 0)
    await assert_all_slots_free(gate)


async def assert_all_slots_free(gate: Admission) -> None:
    """All of the gate's slots can be taken at once again, and no more."""
    app = Blocking()
    gate.app = app
    tasks = [asyncio.create_task(call(gate)) for _ in range(gate.max_in_flight + 1)]
    await until(
        lambda: (
            app.inside == gate.max_in_flight and (gate.waiting == 1 or any(t.done() for t in tasks))
        )
    )
    app.release.set()
    answers = await asyncio.gather(*tasks)
    assert app.most == gate.max_in_flight
    assert {a.status for a in answers} <= {200, 503}
    assert (gate.in_flight, gate.waiting) == (0, 0)


def test_limits_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError):
        admission(Blocking(), max_in_flight=0, max_waiting=0, wait_s=0)
    with pytest.raises(ValueError):
        admission(Blocking(), max_in_flight=1, max_waiting=-1, wait_s=0)


# --- every other way overload reaches a route: 503 with Retry-After, never a 500 ---------


@pytest.mark.parametrize(
    "exc",
    [
        # Every connection of the pool busy past the wait for one.
        WaitQueueTimeoutError("timed out while checking out a connection from the pool"),
        # A majority did not acknowledge the write in time.
        WTimeoutError("waiting for replication timed out", 64, {}),
        # The server's own admission control shed the operation (MongoDB 8.1 and later).
        OperationFailure(
            "server overloaded", 462, {"errorLabels": ["SystemOverloadedError", "RetryableError"]}
        ),
    ],
)
def test_a_database_out_of_capacity_is_a_503_with_retry_after(exc: Exception) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/x")
    async def route() -> None:
        raise exc

    answer = TestClient(app, raise_server_exceptions=False).get("/x")
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["content-type"] == PROBLEM_JSON


async def test_the_factory_puts_admission_inside_request_context() -> None:
    service = f"t-{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        service_name=service, http_max_in_flight=1, http_max_waiting=0, http_admission_wait_ms=0
    )
    router = APIRouter()
    entered, release = asyncio.Event(), asyncio.Event()

    @router.get("/slow")
    async def slow() -> dict[str, str]:
        entered.set()
        await release.wait()
        return {"status": "ok"}

    async def setup(_runtime: Any) -> None:
        pass

    app = create_service_app(settings, title="t", description="t", routers=[router], setup=setup)
    # Listed outermost first: Admission runs inside RequestContext, innermost of all.
    stack = [m.cls for m in app.user_middleware]
    assert stack.index(RequestContext) < stack.index(Admission) == len(stack) - 1
    transport = httpx.ASGITransport(app=app)  # no lifespan: no database, no broker
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        holder = asyncio.create_task(client.get("/slow"))
        await asyncio.wait_for(entered.wait(), 2)
        answer = await client.get("/slow", headers={"X-Correlation-Id": "c-1"})
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert answer.headers["x-correlation-id"] == "c-1"  # RequestContext saw it
        assert (await client.get("/healthz")).status_code == 200
        release.set()
        assert (await holder).status_code == 200
    assert requests_counted(service, "503") == 1  # RequestContext counted it
    assert refused(service, "queue_full") == 1


def requests_counted(service: str, status: str) -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "holdspace_http_requests"
        for sample in family.samples
        if sample.name == "holdspace_http_requests_total"
        and sample.labels.get("service") == service
        and sample.labels.get("status") == status
    )


async def test_ready_while_the_database_answers_even_with_the_broker_away(monkeypatch) -> None:
    """A broker outage leaves the service ready ("degraded"): sign-ups wait in the
    outbox, and a load balancer keeps sending them. Without the database: not ready."""
    import json
    from types import SimpleNamespace

    from shared import app as service_app

    async def answers(_client: object) -> None:
        return None

    async def silent(_client: object) -> None:
        raise ConnectionError("no database")

    runtime = SimpleNamespace(client=object(), broker=SimpleNamespace(is_connected=False))
    monkeypatch.setattr(service_app.mongo, "ping", answers)
    degraded = await service_app.readiness(runtime)  # type: ignore[arg-type]
    assert degraded.status_code == 200
    assert json.loads(degraded.body) == {"status": "degraded", "database": "ok", "broker": "down"}
    runtime.broker.is_connected = True
    assert json.loads((await service_app.readiness(runtime)).body)["status"] == "ok"  # type: ignore[arg-type]
    monkeypatch.setattr(service_app.mongo, "ping", silent)
    down = await service_app.readiness(runtime)  # type: ignore[arg-type]
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
