"""Distributed tracing with OpenTelemetry: one trace per sign-up, across every service.

The trace context travels in W3C ``traceparent`` form:

- over HTTP in the request's ``traceparent`` header (an HTTP span per request);
- in every event's envelope (the CloudEvents distributed-tracing extension), written
  with the aggregate in the same update, so it survives the outbox and a restart;
- over AMQP in the message's ``traceparent`` header, naming the relay's publish span;
- into each consumer's span, so what a handler writes and publishes continues the trace.

Spans never carry personal data: an HTTP span is named by its route template, never
the path (a signing link's token is part of one), and a failure records the
exception's type only, never its message (which can quote what a person typed).

Spans go to an OTLP/HTTP collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, to a
file of JSON lines when ``TRACE_FILE`` is (development: ``scripts/up`` writes
``var/traces/<service>.jsonl``), nowhere otherwise; trace ids reach the logs either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import OPERATIONS_PATHS
from shared.settings import ServiceSettings

__all__ = [
    "Span",
    "SpanKind",
    "Status",
    "StatusCode",
    "TracedRequests",
    "configure",
    "current_traceparent",
    "span",
    "trace_ids",
]

# FastAPI's own telemetry records each request's path and query (a signing link's token
# is one) and exception messages (which can quote what a person typed): off, for
# TracedRequests below.
FASTAPI_TELEMETRY_OFF = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("holdspace")
_provider: TracerProvider | None = None


def configure(
    service: str,
    *,
    otlp_endpoint: str | None = None,
    trace_file: str | None = None,
    sample_ratio: float = 1.0,
) -> TracerProvider:
    """Install this process's tracer provider (once; a second call returns the first)."""
    global _provider
    if _provider is not None:
        return _provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "holdspace"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if trace_file:
        path = Path(trace_file.replace("{service}", service))
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("a", encoding="utf-8", buffering=1)
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def configure_for(settings: ServiceSettings) -> TracerProvider:
    return configure(
        settings.service_name,
        otlp_endpoint=settings.otel_exporter_otlp_endpoint,
        trace_file=settings.trace_file,
        sample_ratio=settings.trace_sample_ratio,
    )


def flush(timeout_ms: int = 5_000) -> None:
    """Export what is buffered (a stopping service keeps its last spans)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def current_traceparent() -> str | None:
    """The current span's context in W3C form, or None outside any span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_from(traceparent: str | None) -> otel_context.Context | None:
    """The remote parent a ``traceparent`` names (None: start a new trace)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({TRACEPARENT: traceparent})


def traceparent_in(headers: Mapping[Any, Any]) -> str | None:
    """The ``traceparent`` among HTTP headers (bytes, as ASGI gives them) or AMQP ones."""
    value = headers.get(b"traceparent", headers.get(TRACEPARENT))
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span]:
    """A span, current inside the block, child of ``parent`` (a traceparent) when given
    or else of the current span. An exception marks it failed by type only."""
    with _tracer.start_as_current_span(
        name,
        context=context_from(parent),
        kind=kind,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            failed(current, exc)
            raise


def _trace_id(traceparent: str | None) -> int:
    parent = context_from(traceparent)
    if parent is None:
        return 0
    return trace.get_current_span(parent).get_span_context().trace_id


def same_trace(a: str | None, b: str | None) -> bool:
    return _trace_id(a) == _trace_id(b)


@contextmanager
def joined(traceparent: str | None, name: str) -> Iterator[None]:
    """Inside the block, work continues the trace ``traceparent`` names.

    The events of one flow (a sign-up) continue the trace its first event was recorded
    in, whichever request or event moves it on later (shared/aggregates.py): outside
    that trace, the block is a span of it, linked to the span that asked for the change.
    """
    parent = context_from(traceparent)
    wanted = trace.get_current_span(parent).get_span_context() if parent else None
    here = trace.get_current_span().get_span_context()
    if wanted is None or not wanted.is_valid or wanted.trace_id == here.trace_id:
        yield
        return
    links = [trace.Link(here)] if here.is_valid else []
    with _tracer.start_as_current_span(name, context=parent, links=links):
        yield


def failed(current: Span, exc: BaseException) -> None:
    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def trace_ids(_logger: Any, _method: str, event_dict: dict) -> dict:
    """structlog processor: the current trace and span ids on every log line."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


class TracedRequests:
    """Pure ASGI middleware: a server span per request, child of the caller's
    ``traceparent``; named by the route template once routed (the path itself can
    hold a token), with the method and the status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPERATIONS_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with span(
            f"HTTP {method}",
            kind=SpanKind.SERVER,
            parent=traceparent_in(dict(scope.get("headers") or [])),
            attributes={"http.request.method": method},
        ) as current:
            try:
                await self.app(scope, receive, noting_status)
            finally:
                template = getattr(scope.get("route"), "path", "unmatched")
                current.update_name(f"{method} {template}")
                current.set_attribute("http.route", template)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    current.set_status(Status(StatusCode.ERROR))


def inject_traceparent(headers: MutableMapping[str, str]) -> None:
    """Name the current span as the parent of an outgoing request (an httpx hook's job)."""
    value = current_traceparent()
    if value:
        headers[TRACEPARENT] = value
