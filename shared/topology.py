"""Who consumes what: the bindings of every service's queue, declared by every service.

Each service declares every service's queue and their bindings at start-up, not only its
own. So an event is routable (and waits in its consumer's queue) as soon as any
service runs, whatever order the services start in; a mandatory publish is refused
only when a binding is really missing. MAX_ATTEMPTS must be the same for every
service, since it shapes the queue arguments.

What each service consumes is declared once, by its handlers (shared/subscriptions.py);
they are found here through the ``holdspace.subscriptions`` entry points, so this
common module names no service module.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

SERVICES = ("registration", "consent", "payments", "notifications", "progress")
ENTRY_POINTS = "holdspace.subscriptions"
# Taken by every service whatever its handlers, bound by the app factory (shared/app.py):
# revoked staff tokens (shared/revocation.py) must be refused everywhere.
EVERY_SERVICE_TAKES = ("staff.access_revoked",)


@cache
def subscriptions() -> dict[str, tuple[str, ...]]:
    """The event types each service consumes, in SERVICES order."""
    found = {}
    for entry in entry_points(group=ENTRY_POINTS):
        registry = entry.load()
        if registry.service != entry.name:
            raise RuntimeError(f"entry point {entry.name} holds {registry.service}'s handlers")
        found[entry.name] = tuple(sorted({*registry.event_types, *EVERY_SERVICE_TAKES}))
    missing = set(SERVICES) - set(found)
    if missing:
        raise RuntimeError(
            f"no {ENTRY_POINTS} entry point for {sorted(missing)}: "
            "the project's install is stale, run scripts/bootstrap"
        )
    return {name: found[name] for name in SERVICES}


def check_bindings(service: str, handled: set[str]) -> None:
    """Refuse to start consuming when the handlers the app bound and the bindings the
    installed entry points declare differ: the install describes other code."""
    differ = set(subscriptions()[service]) ^ handled
    if differ:
        raise RuntimeError(
            f"{service}: handlers and the declared bindings disagree on {sorted(differ)}; "
            "the project's install is stale, run scripts/bootstrap"
        )
