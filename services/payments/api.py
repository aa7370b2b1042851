"""Payments' HTTP API: provider webhooks (verified by signature, no bearer token) and the
coordinators' payments, flags, manual confirmations (maker-checker), refunds and scholarships.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from payments.domain.cases import Claim
from payments.domain.money import major_to_minor
from payments.service import PaymentService
from payments.settings import PaymentsSettings
from payments.verify import (
    GENERIC_HEADER,
    MalformedNotification,
    ProviderKeys,
    VerificationError,
    parse_form,
    verify_alipay,
    verify_generic,
    verify_wechatpay,
)
from payments.views import PaymentViews
from shared.app import problem, provided
from shared.logs import get_logger
from shared.security import Principal, Role, require_role

log = get_logger(__name__)
webhooks = APIRouter(tags=["provider webhooks"])
coordinator = APIRouter(tags=["coordinators"])
Coordinator = Annotated[Principal, Depends(require_role(Role.coordinator))]


Service = Annotated[PaymentService, Depends(provided(PaymentService))]
Views = Annotated[PaymentViews, Depends(provided(PaymentViews))]
Keys = Annotated[ProviderKeys, Depends(provided(ProviderKeys))]


Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
AmountMinor = Annotated[int, Field(ge=0, le=100_000_000, description="minor units")]
# Ids and references are printable ASCII: nothing that cannot be stored (NUL) or shown.
PRINTABLE = r"^[\x20-\x7e]+$"


# Path ids (uuids, hex flag ids, cohort ids): refused early when they could not be ours.
Id = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


def printable(*values: str) -> bool:
    return all(v and len(v) <= 128 and re.fullmatch(PRINTABLE, v) for v in values)


# --- provider webhooks --------------------------------------------------------------------


def _wechat_fail(status: int, message: str) -> JSONResponse:
    # The body WeChat Pay documents for a notification not accepted; it retries later.
    return JSONResponse({"code": "FAIL", "message": message}, status_code=status)


@webhooks.post(
    "/webhooks/wechatpay",
    summary="WeChat Pay API v3 payment notification",
    responses={401: {"description": "signature refused"}, 400: {"description": "stale/malformed"}},
)
async def wechatpay(request: Request, service: Service, keys: Keys) -> JSONResponse:
    settings: PaymentsSettings = service.settings
    key = keys.wechatpay
    if key is None:
        return _wechat_fail(503, "WeChat Pay is not configured")
    body = await request.body()
    try:
        tx = verify_wechatpay(
            headers=request.headers,
            body=body,
            public_key=key,
            serial=settings.wechatpay_platform_serial,
            apiv3_key=settings.wechatpay_apiv3_key.encode(),
            now=time.time(),
            tolerance_s=settings.wechatpay_tolerance_s,
        )
    except VerificationError as exc:
        log.warning("wechatpay notification refused", reason=exc.reason)
        return _wechat_fail(400 if exc.stale else 401, exc.reason)
    except MalformedNotification as exc:
        log.warning("wechatpay notification malformed", reason=str(exc))
        return _wechat_fail(400, str(exc))
    if not printable(tx.notification_id, tx.out_trade_no, tx.transaction_id, tx.currency):
        return _wechat_fail(400, "unreadable ids in the notification")
    record = {
        "_id": f"wechatpay:{tx.notification_id}"[:200],
        "provider": "wechatpay",
        "notification_id": tx.notification_id[:128],
    }
    if tx.event_type != "TRANSACTION.SUCCESS" or tx.trade_state != "SUCCESS":
        await service.note_ignored({**record, "trade_state": tx.trade_state[:32]})
        return JSONResponse({"code": "SUCCESS", "message": "成功"})
    merchant_ok = (not settings.wechatpay_mchid or tx.mchid == settings.wechatpay_mchid) and (
        not settings.wechatpay_appid or tx.appid == settings.wechatpay_appid
    )
    claim = Claim(
        "wechatpay",
        f"wechatpay:{tx.transaction_id}",
        tx.out_trade_no,
        tx.amount_total,
        tx.currency,
        merchant_ok=merchant_ok,
    )
    try:
        await service.settle(claim, record)
    except Exception as exc:  # ours, not the notification's: WeChat Pay will retry
        log.exception("wechatpay notification not processed", error=type(exc).__name__)
        return _wechat_fail(500, "temporarily unable to process; retry later")
    # Received (confirmed, duplicate or flagged for a coordinator): WeChat Pay stops retrying.
    return JSONResponse({"code": "SUCCESS", "message": "成功"})


@webhooks.post(
    "/webhooks/alipay",
    summary="Alipay asynchronous notification",
    response_class=PlainTextResponse,
    responses={400: {"description": "signature refused or malformed: the text fail"}},
)
async def alipay(request: Request, service: Service, keys: Keys) -> PlainTextResponse:
    settings: PaymentsSettings = service.settings
    key = keys.alipay
    if key is None:
        return PlainTextResponse("fail", status_code=503)
    body = await request.body()
    try:
        params = parse_form(body)
        verify_alipay(params, key)
    except VerificationError as exc:
        log.warning("alipay notification refused", reason=exc.reason)
        return PlainTextResponse("fail", status_code=401)
    except MalformedNotification as exc:
        log.warning("alipay notification malformed", reason=str(exc))
        return PlainTextResponse("fail", status_code=400)
    try:
        trade_no = params["trade_no"]
        out_trade_no = params["out_trade_no"]
        status = params["trade_status"]
        currency = params.get("currency") or "CNY"
        amount = major_to_minor(params["total_amount"], currency)
        notify_id = params.get("notify_id") or f"{trade_no}:{status}"
        if not printable(trade_no, out_trade_no, status, currency, notify_id):
            raise ValueError("unreadable ids")
    except (KeyError, ValueError):
        log.warning("alipay notification malformed", reason="missing or bad trade fields")
        return PlainTextResponse("fail", status_code=400)
    record = {
        "_id": f"alipay:{notify_id}"[:200],
        "provider": "alipay",
        "notification_id": notify_id[:128],
    }
    if status not in ("TRADE_SUCCESS", "TRADE_FINISHED"):
        await service.note_ignored({**record, "trade_state": status[:32]})
        return PlainTextResponse("success")
    merchant_ok = params.get("app_id") == settings.alipay_app_id and (
        not settings.alipay_seller_id or params.get("seller_id") == settings.alipay_seller_id
    )
    claim = Claim(
        "alipay", f"alipay:{trade_no}", out_trade_no, amount, currency, merchant_ok=merchant_ok
    )
    try:
        await service.settle(claim, record)
    except Exception as exc:  # ours: anything but "success" makes Alipay retry
        log.exception("alipay notification not processed", error=type(exc).__name__)
        return PlainTextResponse("fail", status_code=500)
    return PlainTextResponse("success")


class GenericNotification(BaseModel):
    """The body of ``POST /webhooks/generic`` (signed with ``Holdspace-Signature``)."""

    model_config = Strict
    id: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)
    type: Literal["payment.succeeded", "payment.failed"]
    reference: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    amount_minor: AmountMinor
    currency: Currency
    transaction_id: str = Field(min_length=1, max_length=128, pattern=PRINTABLE)


@webhooks.post(
    "/webhooks/generic",
    summary="Signed notification from another provider",
    description=(
        "Header `Holdspace-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "
        "`t + '.' + raw body` under GENERIC_WEBHOOK_SECRET>`. Older than the tolerance, or "
        "too far ahead, is refused; the same notification again is answered 200 and changes "
        "nothing."
    ),
)
async def generic(request: Request, service: Service) -> JSONResponse:
    settings: PaymentsSettings = service.settings
    body = await request.body()
    try:
        verify_generic(
            header=request.headers.get(GENERIC_HEADER),
            body=body,
            secret=settings.generic_webhook_secret.encode(),
            now=time.time(),
            tolerance_s=settings.generic_tolerance_s,
            future_s=settings.generic_future_s,
        )
    except VerificationError as exc:
        log.warning("generic notification refused", reason=exc.reason)
        return problem(400 if exc.stale else 401, "Notification refused", exc.reason)
    try:
        notice = GenericNotification.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]}
            for e in exc.errors()
        ]
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return problem(400, "Malformed notification", f"invalid: {fields}", errors=errors)
    record = {
        "_id": f"generic:{notice.id}",
        "provider": "generic",
        "notification_id": notice.id,
    }
    if notice.type != "payment.succeeded":
        await service.note_ignored(record)
        return JSONResponse({"received": True, "outcome": "ignored"})
    claim = Claim(
        "generic",
        f"generic:{notice.transaction_id}",
        notice.reference,
        notice.amount_minor,
        notice.currency,
    )
    result = await service.settle(claim, record)
    return JSONResponse({"received": True, "outcome": result.outcome})


# --- coordinators: payments ------------------------------------------------------------------


@coordinator.get("/payments", summary="Payments, optionally by status")
async def list_payments(
    views: Views,
    _: Coordinator,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict]:
    return await views.payments(status, limit)


@coordinator.get("/payments/{payment_id}", summary="One payment")
async def get_payment(payment_id: Id, views: Views, _: Coordinator) -> dict:
    return await views.payment(payment_id)


class FailBody(BaseModel):
    model_config = Strict
    reason_code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")


@coordinator.post("/payments/{payment_id}/fail", summary="End an unpaid request as failed")
async def fail_payment(payment_id: Id, body: FailBody, service: Service, who: Coordinator) -> dict:
    return await service.fail(payment_id, body.reason_code, who.subject)


@coordinator.get("/refunds", summary="Refunds the refund policy calls for")
async def list_refunds(
    views: Views,
    _: Coordinator,
    status: Annotated[Literal["to_be_made", "made", "none"], Query()] = "to_be_made",
) -> list[dict]:
    return await views.refunds(status)


@coordinator.post("/payments/{payment_id}/refund-made", summary="Record a refund as made")
async def refund_made(payment_id: Id, service: Service, who: Coordinator) -> dict:
    return await service.refund_made(payment_id, who.subject)


# --- coordinators: flags -----------------------------------------------------------------------


@coordinator.get("/flags", summary="Notifications flagged for a coordinator")
async def list_flags(
    views: Views,
    _: Coordinator,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = "open",
) -> list[dict]:
    return await views.flags(status)


class ResolveBody(BaseModel):
    model_config = Strict
    note: str | None = Field(None, max_length=1000)


@coordinator.post("/flags/{flag_id}/resolve", summary="Mark a flag as handled")
async def resolve_flag(flag_id: Id, body: ResolveBody, service: Service, who: Coordinator) -> dict:
    return await service.resolve_flag(flag_id, body.note, who.subject)


# --- coordinators: manual confirmation (maker-checker) -----------------------------------------


class ManualMark(BaseModel):
    model_config = Strict
    reference: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    amount_minor: AmountMinor
    currency: Currency
    evidence: str | None = Field(
        None, max_length=500, description="where the transfer was seen (sealed at rest)"
    )


@coordinator.post(
    "/manual-confirmations",
    status_code=201,
    summary="Mark a transfer as received (counts once another coordinator approves)",
    responses={
        404: {"description": "unknown reference (flagged)"},
        409: {"description": "a mismatch (flagged) or a confirmation already waiting"},
    },
)
async def mark_manual(
    body: ManualMark,
    service: Service,
    who: Coordinator,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=8, max_length=200)
    ] = None,
) -> dict:
    return await service.mark_manual(
        reference=body.reference,
        amount_minor=body.amount_minor,
        currency=body.currency,
        evidence=body.evidence,
        by=who.subject,
        idempotency_key=idempotency_key,
    )


@coordinator.get("/manual-confirmations", summary="Payments with a confirmation to approve")
async def pending_manual(views: Views, _: Coordinator) -> list[dict]:
    return await views.awaiting_approval()


@coordinator.post(
    "/manual-confirmations/{confirmation_id}/approve",
    summary="Approve another coordinator's manual confirmation",
    responses={403: {"description": "the maker cannot approve their own"}},
)
async def approve_manual(confirmation_id: Id, service: Service, who: Coordinator) -> dict:
    return await service.decide_manual(confirmation_id, approve=True, by=who.subject)


@coordinator.post(
    "/manual-confirmations/{confirmation_id}/reject", summary="Reject a manual confirmation"
)
async def reject_manual(confirmation_id: Id, service: Service, who: Coordinator) -> dict:
    return await service.decide_manual(confirmation_id, approve=False, by=who.subject)


# --- coordinators: scholarships --------------------------------------------------------------


class Budget(BaseModel):
    model_config = Strict
    amount_minor: AmountMinor
    currency: Currency


@coordinator.put("/cohorts/{cohort_id}/scholarship-budget", summary="Set a cohort's budget")
async def set_budget(cohort_id: Id, body: Budget, service: Service, _: Coordinator) -> dict:
    return await service.set_budget(cohort_id, body.amount_minor, body.currency)


@coordinator.get("/cohorts/{cohort_id}/scholarship-budget", summary="A cohort's budget")
async def get_budget(cohort_id: Id, views: Views, _: Coordinator) -> dict:
    return await views.budget(cohort_id)


@coordinator.get("/scholarships", summary="Scholarship requests")
async def list_scholarships(
    views: Views,
    _: Coordinator,
    status: Annotated[Literal["requested", "granted", "declined"], Query()] = "requested",
) -> list[dict]:
    return await views.scholarships(status)


class Grant(BaseModel):
    model_config = Strict
    amount_due_minor: AmountMinor = Field(description="what the applicant pays; 0 waives it")


@coordinator.post("/scholarships/{registration_id}/grant", summary="Grant a reduced amount")
async def grant(registration_id: Id, body: Grant, service: Service, who: Coordinator) -> dict:
    return await service.grant(registration_id, body.amount_due_minor, who.subject)


@coordinator.post("/scholarships/{registration_id}/decline", summary="Decline a request")
async def decline(registration_id: Id, service: Service, who: Coordinator) -> dict:
    return await service.decline(registration_id, who.subject)
