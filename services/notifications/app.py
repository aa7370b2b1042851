"""Wiring of the notifications service; ``python -m notifications`` serves it."""

from __future__ import annotations

from fastapi import FastAPI

from notifications import api
from notifications.handlers import subscriptions
from notifications.service import NotificationService
from notifications.settings import NotificationsSettings
from notifications.store import INDEXES, Sealer, Stores
from notifications.views import NotificationViews
from shared.app import Runtime, create_service_app
from shared.erasure import erasures_store
from shared.security import FieldCipher


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()

    async def setup(runtime: Runtime) -> None:
        # Only deliveries carry events; recipients and cohorts are projections whose
        # documents are never scanned by the relay (they grow with every sign-up).
        stores = Stores(
            deliveries=runtime.store("deliveries", inbox_size=100),
            recipients=runtime.store("recipients", relayed=False, inbox_size=100),
            cohorts=runtime.store("cohorts", relayed=False, inbox_size=100),
            alerts=runtime.store("alerts", relayed=False),
            programs=runtime.db["programs"],
            delivery_log=runtime.db["delivery_log"],
            erasures=erasures_store(runtime.store, "holdspace/notifications"),
        )
        sealer = Sealer(FieldCipher.from_settings(settings))
        service = NotificationService(settings, stores, sealer)
        sender, reminders, alerts = service.sender, service.reminders, service.alerts
        views = NotificationViews(stores, settings.service_name, sealer)
        runtime.provide(service, sender, reminders, alerts, views)
        runtime.handlers.update(subscriptions.bind(service))
        # A delivery is claimed by its own "sending" state (Sender.deliver).
        runtime.due_work("deliveries", sender.deliveries_due, sender.deliver, claims=None)
        runtime.due_work(
            "reminders",
            reminders.cohorts_due,
            reminders.fire_reminders,
            claims=stores.cohorts.collection,
        )
        runtime.due_work(
            "safety-alerts", alerts.due, alerts.escalate, claims=stores.alerts.collection
        )
        runtime.due_work(
            "archive",
            sender.archivable,
            sender.archive,
            claims=stores.deliveries.collection,
            poll_s=settings.archive_poll_s,
        )

    return create_service_app(
        settings,
        title="Holdspace notifications",
        description="Messages to applicants and coordinators: email, chat alerts, reminders.",
        routers=[api.operator, api.pages, api.coordinator],
        setup=setup,
        indexes=INDEXES,
    )
