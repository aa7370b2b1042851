"""A service's event handlers, declared once and typed by the event they take.

Each service's handlers.py holds one :class:`Subscriptions` and decorates its handlers
with it; the parameter annotated with an event model (or a union of them) says which
event types the handler takes::

    subscriptions = Subscriptions("payments")

    @subscriptions.on
    async def consent_signed(
        service: PaymentService, event: ev.ConsentSigned, envelope: Envelope
    ) -> None: ...

That registry is the only list of what a service consumes: its queue bindings (every
service declares every queue, see shared/topology.py), the consumer's dispatch and the
start-up check all derive from it. The common library finds the registries through the
``holdspace.subscriptions`` entry points (pyproject.toml), so it imports no service.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.events import Envelope, EventData
from shared.messaging import Handler

S = TypeVar("S")
HandlerFn = Callable[[Any, Any, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    event_type: str
    model: type[EventData]
    handler: HandlerFn


class Subscriptions(Generic[S]):
    def __init__(self, service: str) -> None:
        self.service = service
        self._by_type: dict[str, Subscription] = {}

    def on(self, handler: HandlerFn) -> HandlerFn:
        """Register ``handler(service, event, envelope)`` for the event model(s) its
        ``event`` parameter is annotated with."""
        for model in _event_models(handler):
            if model.event_type in self._by_type:
                raise TypeError(f"{self.service} handles {model.event_type} twice")
            self._by_type[model.event_type] = Subscription(model.event_type, model, handler)
        return handler

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_type))

    def handler_for(self, event_type: str) -> HandlerFn:
        return self._by_type[event_type].handler

    def bind(self, service: S) -> dict[str, Handler]:
        """The consumer's dispatch table: each event validated into its model, then handed
        to its handler with ``service``. A payload that does not validate raises (and is
        retried, then dead-lettered, by the consumer)."""

        def dispatch(sub: Subscription) -> Handler:
            async def handle(envelope: Envelope) -> None:
                event = sub.model.model_validate(envelope.data)
                await sub.handler(service, event, envelope)

            return handle

        return {t: dispatch(s) for t, s in sorted(self._by_type.items())}


def _event_models(handler: HandlerFn) -> tuple[type[EventData], ...]:
    params = list(inspect.signature(handler).parameters)
    if len(params) != 3:
        raise TypeError(f"{handler.__qualname__} must take (service, event, envelope)")
    hint = typing.get_type_hints(handler)[params[1]]
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    models = tuple(o for o in options if isinstance(o, type) and issubclass(o, EventData))
    if not models or len(models) != len(options):
        raise TypeError(f"{handler.__qualname__}: annotate `{params[1]}` with event models")
    for model in models:
        if "event_type" not in model.__dict__:
            raise TypeError(f"{model.__name__} is a family of events, not one event type")
    return models


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
