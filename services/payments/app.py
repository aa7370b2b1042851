"""Wiring of the payments service; ``python -m payments`` serves it."""

from __future__ import annotations

from fastapi import FastAPI

from payments import api, webhooks
from payments.access import PaymentAccess
from payments.handlers import subscriptions
from payments.manual import ManualConfirmations
from payments.scholarships import Scholarships
from payments.service import PaymentService
from payments.settings import PaymentsSettings
from payments.store import INDEXES, PaymentStores, Sealer
from payments.verify import ProviderKeys
from payments.views import PaymentViews
from shared.app import Runtime, create_service_app
from shared.security import FieldCipher, decode_key


def create_app(settings: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()

    async def setup(runtime: Runtime) -> None:
        cipher = FieldCipher.from_settings(settings)
        stores = PaymentStores.open(runtime.store, runtime.db)
        sealer = Sealer(cipher)
        service = PaymentService(
            stores,
            sealer,
            settings,
            reference_key=decode_key(settings.blind_index_key, setting="BLIND_INDEX_KEY"),
        )
        keys = ProviderKeys.from_pem(
            settings.wechatpay_platform_public_key, settings.alipay_public_key
        )
        scholarships = Scholarships(service)
        runtime.provide(
            service,
            ManualConfirmations(service),
            scholarships,
            PaymentViews(stores, sealer),
            PaymentAccess(stores),
            keys,
        )
        runtime.handlers.update(subscriptions.bind(service))
        runtime.due_work(
            "payment-expiry",
            service.requests_due,
            service.expire_due,
            claims=stores.cases.collection,
        )
        runtime.due_work(
            "scholarship-reservations",
            scholarships.reservations_due,
            scholarships.check_reservations,
            claims=stores.budgets.collection,
        )

    return create_service_app(
        settings,
        title="Holdspace payments",
        description=(
            "Payment requests, verified WeChat Pay / Alipay / generic notifications, manual "
            "confirmation by two coordinators, refunds by policy, scholarships."
        ),
        routers=[webhooks.webhooks, api.pages, api.coordinator],
        setup=setup,
        indexes=INDEXES,
    )
