"""The one set of errors a use case may refuse with.

Domain code and use cases raise these and know nothing of HTTP: the app factory
(shared/app.py) turns each kind into an RFC 9457 problem once, for every service.
``field`` names what the client should look at or fix; ``extra`` is added to the
problem as it is (never personal data).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "TooMany",
]


class DomainError(Exception):
    """A request the domain refuses; the subclass says which kind of refusal."""

    def __init__(self, field: str | None, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.extra = extra


class NotFound(DomainError, LookupError):
    """Nothing answers to this id or token (or the caller may not know that it does)."""


class Conflict(DomainError):
    """The thing exists but its state does not allow this now."""


class Gone(DomainError):
    """It existed and can never be used again (an expired or replaced link)."""


class Forbidden(DomainError):
    """The caller is known but may not do this (a coordinator approving their own case)."""


class Invalid(DomainError):
    """The request is well formed but its content breaks a rule; ``field`` is at fault."""


class TooMany(DomainError):
    """Too many requests of this kind from this client, or for this thing, just now;
    ``retry_after`` says in how many seconds one is taken again."""

    def __init__(self, field: str | None, message: str, retry_after: int) -> None:
        super().__init__(field, message, retry_after=retry_after)
        self.retry_after = retry_after
