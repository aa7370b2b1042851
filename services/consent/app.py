"""Wiring of the consent service; ``python -m consent`` serves it."""

from __future__ import annotations

from fastapi import FastAPI

from consent import api
from consent.forms_admin import FormAdmin
from consent.handlers import subscriptions
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import INDEXES, ConsentStores, Sealer
from consent.views import ConsentViews
from shared.app import Runtime, create_service_app
from shared.security import FieldCipher, decode_key


def create_app(settings: ConsentSettings | None = None) -> FastAPI:
    settings = settings or ConsentSettings()

    async def setup(runtime: Runtime) -> None:
        cipher = FieldCipher.from_settings(settings)
        chain_key = decode_key(settings.consent_chain_key, setting="CONSENT_CHAIN_KEY")
        stores = ConsentStores.open(runtime.store, runtime.db, cipher, chain_key)
        sealer = Sealer(cipher)
        service = ConsentService(stores, sealer, settings)
        runtime.provide(service, FormAdmin(stores), ConsentViews(stores, sealer))
        runtime.handlers.update(subscriptions.bind(service))
        runtime.due_work("consent-due", service.due_items, service.run_due, claims=stores.due)
        runtime.due_work(
            "re-consent",
            service.reconsent_due,
            service.run_reconsent,
            claims=stores.forms.collection,
            poll_s=settings.reconsent_poll_s,
        )

    return create_service_app(
        settings,
        title="Holdspace consent",
        description="Versioned consent forms, signing with a verifiable audit trail, withdrawal.",
        routers=[api.public, api.pages, api.coordinator],
        setup=setup,
        indexes=INDEXES,
    )
