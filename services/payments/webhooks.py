"""Payments' provider webhooks: WeChat Pay, Alipay and a generic signed notification.

Each answers in its provider's own protocol (WeChat Pay's JSON code, Alipay's text
"success"), verifies the signature before reading anything, keeps a verified
notification once, and hands the money to the settle use case.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, ValidationError

from payments.api import PRINTABLE, AmountMinor, Currency, Service, Strict, printable
from payments.domain.claims import Claim
from payments.domain.money import major_to_minor
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
from shared.aggregates import ConcurrentModification
from shared.app import provided
from shared.logs import get_logger
from shared.mongo import unreachable
from shared.problems import DATABASE_RETRY_AFTER_S, problem

log = get_logger(__name__)
webhooks = APIRouter(tags=["provider webhooks"])
Keys = Annotated[ProviderKeys, Depends(provided(ProviderKeys))]


def _in_protocol(
    media_type: str, schema: dict[str, Any], answers: dict[int, str]
) -> dict[int | str, Any]:
    """``responses=`` of a provider's webhook: every answer, errors too, is in the body
    the provider's protocol names, never a problem document."""
    content = {media_type: {"schema": schema}}
    return {status: {"description": d, "content": content} for status, d in answers.items()}


_ANSWERS = {
    200: "taken (or taken before)",
    400: "stale, or not what the protocol sends",
    401: "signature refused",
    500: "not processed (a bug); the provider retries",
    503: "not configured, or the database did not answer; the provider retries",
}
WECHAT_ANSWERS = _in_protocol(
    "application/json",
    {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"enum": ["SUCCESS", "FAIL"]}, "message": {"type": "string"}},
    },
    _ANSWERS,
)
# "success" for a 200, "fail" for every other answer.
ALIPAY_ANSWERS = _in_protocol("text/plain", {"enum": ["success", "fail"]}, _ANSWERS)


def _wechat_fail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # The body WeChat Pay documents for a notification not accepted; it retries later.
    return JSONResponse({"code": "FAIL", "message": message}, status_code=status, headers=headers)


def _not_processed(provider: str, exc: Exception) -> tuple[int, dict[str, str]]:
    """Our failure, not the notification's, as a status (the provider retries either
    way): the database not answering is a 503 with Retry-After, as on every other route,
    so operators see an outage; anything else is a 500, a bug."""
    if unreachable(exc) or isinstance(exc, ConcurrentModification):
        why = "database unreachable" if unreachable(exc) else "the case kept changing"
        log.warning(
            f"notification not processed: {why}", provider=provider, error=type(exc).__name__
        )
        return 503, {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
    log.exception("notification not processed", provider=provider, error=type(exc).__name__)
    return 500, {}


@webhooks.post(
    "/webhooks/wechatpay",
    summary="WeChat Pay API v3 payment notification",
    responses=WECHAT_ANSWERS,
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
        status, headers = _not_processed("wechatpay", exc)
        return _wechat_fail(status, "temporarily unable to process; retry later", headers)
    # Received (confirmed, duplicate or flagged for a coordinator): WeChat Pay stops retrying.
    return JSONResponse({"code": "SUCCESS", "message": "成功"})


@webhooks.post(
    "/webhooks/alipay",
    summary="Alipay asynchronous notification",
    response_class=PlainTextResponse,
    responses=ALIPAY_ANSWERS,
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
        status, headers = _not_processed("alipay", exc)
        return PlainTextResponse("fail", status_code=status, headers=headers)
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
    responses={
        400: {"description": "stale or too far ahead"},
        401: {"description": "signature refused"},
    },
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
