"""A delivery's life: one message, to one recipient, on one channel (pure).

``pending`` (waiting for its time or its next try) -> ``sending`` (an attempt is in
flight) -> ``sent``; or ``failed`` (permanent, or out of attempts), ``dropped``
(too late to be useful), ``cancelled`` (the reason for it went away).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    dropped = "dropped"
    cancelled = "cancelled"


FINAL = frozenset({Status.sent, Status.failed, Status.dropped, Status.cancelled})
# Final and of no further interest to an operator: moved out of the hot collection.
ARCHIVABLE = frozenset({Status.sent, Status.dropped, Status.cancelled})


class DeliveryFailure(Exception):
    """A channel's refusal. ``code`` is safe to store and log (never an address or body)."""

    def __init__(self, code: str, *, temporary: bool, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.temporary = temporary
        self.detail = detail[:200]


def delivery_key(event_id: str, template: str, recipient_ref: str) -> str:
    return f"{event_id}|{template}|{recipient_ref}"


def delivery_id(event_id: str, template: str, recipient_ref: str) -> str:
    """Deterministic, so a redelivered event maps onto the delivery it already made."""
    key = delivery_key(event_id, template, recipient_ref)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def retry_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential back-off after the ``attempts``-th failed attempt."""
    return min(base_s * 2 ** max(0, attempts - 1), max_s)


@dataclass(frozen=True)
class AfterFailure:
    status: Status
    due_at: datetime | None


def after_failure(
    failure: DeliveryFailure,
    *,
    attempts: int,
    max_attempts: int,
    now: datetime,
    base_s: float,
    max_s: float,
    expires_at: datetime | None = None,
) -> AfterFailure:
    """Retry a temporary failure with back-off; stop at a permanent one or the last attempt.

    A retry that would only happen after the message expired is pointless: it fails now.
    """
    if not failure.temporary or attempts >= max_attempts:
        return AfterFailure(Status.failed, None)
    due = now + timedelta(seconds=retry_delay(attempts, base_s, max_s))
    if expires_at is not None and due > expires_at:
        return AfterFailure(Status.failed, None)
    return AfterFailure(Status.pending, due)


def may_attempt(status: str, due_at: datetime | None, now: datetime) -> bool:
    """Whether a delivery is due for an attempt (``sending`` past its claim = interrupted)."""
    return status in (Status.pending, Status.sending) and due_at is not None and due_at <= now
