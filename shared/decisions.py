"""What a decision does to an aggregate: the one shape every service's domain returns.

Pure (no I/O): domain modules build it, shared/aggregates.py writes it in one
conditional update with the events in the aggregate's outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.events import Envelope, EventData


@dataclass
class Change:
    """What a decision does to an aggregate: fields to set, the events it causes, a result.

    ``emit`` holds the typed events the domain decided on; the store puts each in its
    envelope (the store's ``enveloper``, caused by the event being applied, if any).
    ``events`` holds envelopes built already, for events that are about no registration.
    """

    set: dict[str, Any] = field(default_factory=dict)
    emit: list[EventData] = field(default_factory=list)
    result: Any = None
    events: list[Envelope] = field(default_factory=list)
