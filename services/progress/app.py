"""Wiring of the progress service; ``python -m progress`` serves it."""

from __future__ import annotations

from fastapi import FastAPI

from progress import api
from progress.handlers import subscriptions
from progress.service import ProgressService
from progress.settings import ProgressSettings
from progress.store import INDEXES, ProgressStores, Sealer
from progress.views import ProgressViews
from shared.app import Runtime, create_service_app
from shared.security import FieldCipher


def create_app(settings: ProgressSettings | None = None) -> FastAPI:
    settings = settings or ProgressSettings()

    async def setup(runtime: Runtime) -> None:
        cipher = FieldCipher.from_settings(settings)
        stores = ProgressStores.open(runtime.store, runtime.db, cipher)
        sealer = Sealer(cipher)
        service = ProgressService(stores, sealer, settings)
        runtime.provide(service, ProgressViews(stores, sealer, settings.feedback_minimum))
        runtime.handlers.update(subscriptions.bind(service))

    return create_service_app(
        settings,
        title="Holdspace progress",
        description=(
            "Between sessions: questionnaires, homework, milestones, sharing and feedback, "
            "private to the participant."
        ),
        routers=[api.pages, api.coordinator],
        setup=setup,
        indexes=INDEXES,
    )
