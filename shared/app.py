"""The FastAPI app factory every service uses.

It wires what each service needs the same way: settings and logging, the MongoDB
client and the service's indexes, the broker and its topology, the outbox relay,
the event consumer and due-work runners (started in the lifespan, stopped in
reverse), ``/healthz``, ``/readyz``, ``/metrics``, correlation ids, a request
body limit, and errors as RFC 9457 problem details naming the field at fault
(shared/problems.py), named so in the OpenAPI document.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from aio_pika.abc import AbstractChannel
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics, mongo, tracing
from shared.admission import Admission
from shared.aggregates import AggregateStore
from shared.contract import body_matches_document
from shared.due import DueClaims, DueRunner, FindDue, RunDue
from shared.logs import configure_logging, get_logger
from shared.messaging import Broker, Handler, Topology
from shared.outbox import PENDING_OUTBOX, OutboxRelay
from shared.problems import (
    DATABASE_RETRY_AFTER_S,
    document_problems,
    install_problem_handlers,
    problem,
)
from shared.revocation import COLLECTION as REVOKED_TOKENS
from shared.revocation import INDEXES as REVOCATION_INDEXES
from shared.revocation import RevocationList
from shared.security import FieldCipher
from shared.settings import ServiceSettings
from shared.topology import check_bindings, subscriptions

log = get_logger(__name__)


@dataclass
class Runtime:
    """Everything a running service holds; on ``app.state.runtime``."""

    settings: ServiceSettings
    client: AsyncMongoClient
    db: AsyncDatabase
    broker: Broker
    stores: list[AggregateStore] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    due: list[DueRunner] = field(default_factory=list)
    relay: OutboxRelay | None = None

    def store(self, name: str, *, relayed: bool = True, **options: Any) -> AggregateStore:
        """An aggregate store on this service's database.

        ``relayed`` stores have their outbox published by the relay; a store whose
        documents never carry events can opt out, so the relay never scans it.
        """
        store = AggregateStore(self.db[name], service=self.settings.service_name, **options)
        if relayed:
            self.stores.append(store)
        return store

    def due_work(
        self,
        kind: str,
        find_due: FindDue,
        run: RunDue,
        *,
        claims: AsyncCollection | None,
        poll_s: float | None = None,
    ) -> None:
        """Time-driven work (shared/due.py), each item claimed in ``claims`` before it runs.

        ``claims`` is the collection holding the items; None for work that claims its
        items by itself.
        """
        self.due.append(
            DueRunner(
                service=self.settings.service_name,
                kind=kind,
                find_due=find_due,
                run=run,
                claims=None
                if claims is None
                else DueClaims(claims, claim_s=self.settings.due_claim_s),
                poll_s=self.settings.jobs_poll_s if poll_s is None else poll_s,
            )
        )

    provided: dict[type, Any] = field(default_factory=dict)

    def provide(self, *values: Any) -> None:
        """What the routes ask for by type: the use cases, the views, provider keys."""
        for value in values:
            self.provided[type(value)] = value


Setup = Callable[[Runtime], Awaitable[None]]
T = TypeVar("T")


def provided(kind: type[T]) -> Callable[[Request], T]:
    """A FastAPI dependency on what the service's setup provided of type ``kind``:
    ``Service = Annotated[RegistrationService, Depends(provided(RegistrationService))]``."""

    def dependency(request: Request) -> T:
        return request.app.state.runtime.provided[kind]

    return dependency


def json_file(data: Any, filename: str) -> Response:
    """``data`` as a JSON file to keep (a person's own data): readable text, never cached."""
    return Response(
        json.dumps(jsonable_encoder(data), ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def add_admission(
    app: FastAPI, settings: ServiceSettings, refusal: Callable[[Scope, int], Response] | None = None
) -> None:
    """Admission control (shared/admission.py) as the settings bound it, around what was
    added so far; ``refusal`` answers a request refused (a problem document if None)."""
    app.add_middleware(
        Admission,
        service=settings.service_name,
        max_in_flight=settings.http_max_in_flight,
        max_waiting=settings.http_max_waiting,
        wait_s=settings.http_admission_wait_ms / 1000,
        refusal=refusal,
    )


def add_request_context(
    app: FastAPI,
    settings: ServiceSettings,
    too_large: Callable[[Scope, int], Response] | None = None,
) -> None:
    """RequestContext as the settings bound it, around what was added so far;
    ``too_large`` answers a body past the limit (a problem document if None)."""
    app.add_middleware(
        RequestContext,
        service=settings.service_name,
        max_body_bytes=settings.max_body_bytes,
        max_image_bytes=settings.max_image_bytes,
        too_large=too_large,
    )


class RequestContext:
    """Pure ASGI middleware: correlation id, body limit, HTTP metrics, one log line.

    An ``image/*`` body has its own, larger limit; the route still checks what it takes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        max_body_bytes: int,
        max_image_bytes: int,
        too_large: Callable[[Scope, int], Response] | None = None,
    ) -> None:
        self.app = app
        self.too_large = too_large
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.max_image_bytes = max_image_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        correlation_id = headers.get(b"x-correlation-id", b"").decode("latin-1")[:64]
        correlation_id = correlation_id or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(service=self.service, correlation_id=correlation_id)
        is_image = headers.get(b"content-type", b"").lower().startswith(b"image/")
        limit = self.max_image_bytes if is_image else self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        received = 0
        status = 500
        started = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(
                    (b"x-correlation-id", correlation_id.encode("latin-1"))
                )
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            status = 413
            await self._too_large(scope, receive, send, limit)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            metrics.HTTP_LATENCY.labels(self.service, method, template).observe(elapsed)
            if template not in metrics.OPERATIONS_PATHS:
                log.info(
                    "http request",
                    method=method,
                    route=template,
                    status=status,
                    ms=round(elapsed * 1000, 1),
                )

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        if self.too_large is not None:
            response = self.too_large(scope, limit)
        else:
            response = problem(413, "Request body too large", f"the limit is {limit} bytes")
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    routers: list[APIRouter],
    setup: Setup,
    indexes: mongo.IndexPlan | None = None,
) -> FastAPI:
    """Build a service's app. ``setup`` registers stores, handlers and due runners."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format, settings.is_production)
        tracing.configure_for(settings)
        client = mongo.make_client(
            settings.mongodb_url,
            service=settings.service_name,
            operation_timeout_s=settings.database_timeout_s,
        )
        await mongo.wait_until_reachable(client)
        db = client[settings.database_name]
        await mongo.ensure_indexes(db, {**(indexes or {}), **REVOCATION_INDEXES})
        topology = Topology(
            settings.holdspace_topology_prefix,
            settings.service_name,
            tuple(settings.retry_delays_ms()),
        )
        broker = Broker(
            settings.rabbitmq_url,
            topology,
            prefetch=settings.prefetch,
            publish_timeout_s=settings.publish_timeout_s,
            handler_timeout_s=settings.handler_timeout_s,
            # Seals personal events for the journey and opens them (shared/wire.py).
            cipher=FieldCipher.from_settings(settings),
            gate=mongo.DatabaseGate(client),
        )
        await broker.connect()
        await declare_all_queues(broker, settings)
        runtime = Runtime(settings, client, db, broker)
        app.state.runtime = runtime
        # Every service takes revocations (shared/topology.py EVERY_SERVICE_TAKES) and
        # checks every staff request against them (shared/tokens.py require_role).
        revocations = RevocationList(db[REVOKED_TOKENS])
        runtime.provide(revocations)
        runtime.handlers.update(revocations.handlers())
        await setup(runtime)
        # The relay's look for unpublished events must not scan on MongoDB.
        relayed = {store.collection.name: [PENDING_OUTBOX] for store in runtime.stores}
        await mongo.ensure_indexes(db, relayed)
        runtime.relay = OutboxRelay(
            broker,
            runtime.stores,
            service=settings.service_name,
            poll_s=settings.outbox_poll_s,
            claim_s=settings.outbox_claim_s,
        )
        await runtime.relay.start()
        check_bindings(settings.service_name, set(runtime.handlers))
        await broker.consume(runtime.handlers)
        for runner in runtime.due:
            await runner.start()
        log.info("service started", service=settings.service_name)
        try:
            yield
        finally:
            for runner in runtime.due:
                await runner.stop()
            for consumer in list(broker._consumers):
                await consumer.stop()
            await runtime.relay.stop()
            if broker.gate is not None:
                await broker.gate.close()
            await broker.close()
            await client.close()
            tracing.flush()
            log.info("service stopped", service=settings.service_name)

    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        telemetry=tracing.FASTAPI_TELEMETRY_OFF,
        dependencies=[Depends(body_matches_document)],
    )
    app.state.settings = settings
    # Added first, so it runs inside RequestContext: its 503s are counted, logged, traced.
    add_admission(app, settings)
    add_request_context(app, settings)
    app.add_middleware(tracing.TracedRequests)  # outermost: its span holds the log line
    install_problem_handlers(app)
    document_problems(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Ready to take requests: the database answers (the broker is reported)",
        responses={503: {"description": "Not ready", "content": {"application/json": {}}}},
    )
    async def readyz(request: Request) -> JSONResponse:
        return await readiness(getattr(request.app.state, "runtime", None))

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


async def declare_all_queues(broker: Broker, settings: ServiceSettings) -> None:
    """Every service's queue and bindings (see shared/topology.py for why), when this
    service's broker user may declare; a least-privilege user finds them declared by
    the deployment, and checks its own."""

    async def declare(channel: AbstractChannel) -> None:
        for service, event_types in subscriptions().items():
            other = Broker(
                broker.url,
                Topology(
                    settings.holdspace_topology_prefix, service, tuple(settings.retry_delays_ms())
                ),
            )
            await other.declare_service_queues(channel, event_types)

    await broker.declare_or_verify(declare, broker.own_names())


async def readiness(runtime: Runtime | None) -> JSONResponse:
    """Ready while the database answers. A broker away is "degraded", not unready: writes
    wait in the outboxes and events in the queues until it is back, so a service taken
    out of its load balancer for it would refuse sign-ups it could have kept."""
    checks = {"database": "down", "broker": "down"}
    if runtime is not None:
        try:
            await mongo.ping(runtime.client)
            checks["database"] = "ok"
        except Exception:
            pass
        checks["broker"] = "ok" if runtime.broker.is_connected else "down"
    if checks["database"] != "ok":
        body = {"status": "unavailable", **checks}
        return JSONResponse(body, 503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})
    return JSONResponse({"status": "ok" if checks["broker"] == "ok" else "degraded", **checks})


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime
