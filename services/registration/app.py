"""Wiring of the registration service; ``python -m registration`` serves it."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import FastAPI

from registration import api, setup_api
from registration.cohorts import CohortControls
from registration.erasure import Erasures
from registration.handlers import subscriptions
from registration.limits import SignUpLimits
from registration.moves import Moves
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
        erasures = Erasures(service)
        moves = Moves(service)
        runtime.provide(
            service,
            signups,
            erasures,
            ProgramAdmin(stores, sealer),
            CohortControls(stores),
            moves,
            RegistrationViews(stores, sealer),
            SignUpLimits(settings),
        )
        runtime.handlers.update(subscriptions.bind(service))
        _due_work(runtime, settings, service, signups, erasures, moves)

    return create_service_app(
        settings,
        title="Holdspace registration",
        description="Programs, cohorts, seats, sign-ups, waitlists and coordinator review.",
        routers=[api.public, api.coordinator, setup_api.setup],
        setup=setup,
        indexes=INDEXES,
    )


def _due_work(
    runtime: Runtime,
    settings: RegistrationSettings,
    service: RegistrationService,
    signups: SignUps,
    erasures: Erasures,
    moves: Moves,
) -> None:
    """The time-driven work: holds that run out, and finishing or forgetting what a
    crash, or an applicant who never came back, left behind."""
    stores = service.stores

    async def unadmitted(now: datetime) -> list[str]:
        return await service.unadmitted(now - timedelta(seconds=settings.reconcile_after_s))

    async def unmoved(now: datetime) -> list[str]:
        return await moves.unfinished(now - timedelta(seconds=settings.reconcile_after_s))

    runtime.due_work(
        "seat-expiry", service.cohorts_due, service.expire_due, claims=stores.cohorts.collection
    )
    for kind, find_due, run, claims in (
        ("finish-sign-up", unadmitted, service.finish_admission, stores.registrations),
        ("finish-erasure", erasures.unfinished, erasures.finish, stores.registrations),
        ("finish-move", unmoved, moves.finish, stores.registrations),
    ):
        runtime.due_work(kind, find_due, run, claims=claims, poll_s=settings.reconcile_poll_s)
    for kind, find_due, run, claims in (
        ("forget-unverified", signups.never_verified, signups.forget, stores.registrations),
        ("forget-idempotency-keys", signups.stale_keys, signups.forget_key, stores.idempotency),
    ):
        runtime.due_work(kind, find_due, run, claims=claims, poll_s=settings.forget_poll_s)
