"""Wiring of the registration service: ``uvicorn registration.app:create_app --factory``."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import FastAPI

from registration import api
from registration.handlers import subscriptions
from registration.limits import SignUpLimits
from registration.programs import ProgramAdmin
from registration.service import RegistrationService
from registration.settings import RegistrationSettings
from registration.signups import SignUps
from registration.store import INDEXES, RegistrationStores, Sealer
from registration.views import RegistrationViews
from shared.app import Runtime, create_service_app
from shared.security import BlindIndexer, FieldCipher


def create_app(settings: RegistrationSettings | None = None) -> FastAPI:
    settings = settings or RegistrationSettings()

    async def setup(runtime: Runtime) -> None:
        cipher = FieldCipher.from_settings(settings)
        stores = RegistrationStores.open(runtime.store, runtime.db, cipher)
        sealer = Sealer(cipher, BlindIndexer.from_settings(settings))
        service = RegistrationService(stores, sealer)
        signups = SignUps(
            service,
            verify_within_s=settings.verify_within_s,
            keys_kept_s=settings.idempotency_ttl_s,
        )
        runtime.provide(
            service,
            signups,
            ProgramAdmin(stores, sealer),
            RegistrationViews(stores, sealer),
            SignUpLimits(settings),
        )
        runtime.handlers.update(subscriptions.bind(service))

        async def unadmitted(now: datetime) -> list[str]:
            return await service.unadmitted(now - timedelta(seconds=settings.reconcile_after_s))

        runtime.due_work(
            "seat-expiry", service.cohorts_due, service.expire_due, claims=stores.cohorts.collection
        )
        runtime.due_work(
            "finish-sign-up",
            unadmitted,
            service.finish_admission,
            claims=stores.registrations,
            poll_s=settings.reconcile_poll_s,
        )
        runtime.due_work(
            "forget-unverified",
            signups.never_verified,
            signups.forget,
            claims=stores.registrations,
            poll_s=settings.forget_poll_s,
        )
        runtime.due_work(
            "forget-idempotency-keys",
            signups.stale_keys,
            signups.forget_key,
            claims=stores.idempotency,
            poll_s=settings.forget_poll_s,
        )

    return create_service_app(
        settings,
        title="Holdspace registration",
        description="Programs, cohorts, seats, sign-ups, waitlists and coordinator review.",
        routers=[api.public, api.coordinator],
        setup=setup,
        indexes=INDEXES,
    )
