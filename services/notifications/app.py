"""Wiring of the notifications service: ``uvicorn notifications.app:create_app --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from notifications import api
from notifications.handlers import build_handlers
from notifications.service import NotificationService, Stores
from notifications.settings import NotificationsSettings
from notifications.store import INDEXES, Sealer
from shared.aggregates import AggregateStore
from shared.app import Runtime, create_service_app
from shared.due import DueRunner
from shared.security import FieldCipher


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()

    async def setup(runtime: Runtime) -> None:
        def store(name: str) -> AggregateStore:
            return AggregateStore(
                runtime.db[name],
                runtime.locks,
                service=settings.service_name,
                atomic_updates=runtime.atomic_updates,
                inbox_size=100,
            )

        deliveries = store("deliveries")
        # Only deliveries carry events; recipients and cohorts are projections whose
        # documents are never scanned by the relay (they grow with every sign-up).
        runtime.stores.append(deliveries)
        stores = Stores(
            deliveries=deliveries,
            recipients=store("recipients"),
            cohorts=store("cohorts"),
            programs=runtime.db["programs"],
            delivery_log=runtime.db["delivery_log"],
        )
        service = NotificationService(
            settings, stores, Sealer(FieldCipher.from_settings(settings)), runtime.locks
        )
        runtime.extra["service"] = service
        runtime.handlers.update(build_handlers(service))
        runtime.due += [
            DueRunner(
                runtime.locks,
                service=settings.service_name,
                kind="deliveries",
                find_due=service.deliveries_due,
                run=service.deliver,
                poll_s=settings.jobs_poll_s,
            ),
            DueRunner(
                runtime.locks,
                service=settings.service_name,
                kind="reminders",
                find_due=service.cohorts_due,
                run=service.fire_reminders,
                poll_s=settings.jobs_poll_s,
            ),
            DueRunner(
                runtime.locks,
                service=settings.service_name,
                kind="archive",
                find_due=service.archivable,
                run=service.archive,
                poll_s=settings.archive_poll_s,
            ),
        ]

    return create_service_app(
        settings,
        title="Holdspace notifications",
        description="Messages to applicants and coordinators: email, chat alerts, reminders.",
        routers=[api.operator, api.coordinator],
        setup=setup,
        indexes=INDEXES,
    )
