"""The ways a message leaves: email over SMTP and a chat group robot's webhook.

Each channel turns every way a send can go wrong into a :class:`DeliveryFailure`
that says whether trying again can help: a refused connection, a timeout or a 4xx
SMTP reply is temporary; a 5xx reply or an invalid address is permanent. Error
texts keep the reply code and never the address or the message.
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
from email_validator import EmailNotValidError, validate_email

from notifications.domain.delivery import DeliveryFailure
from notifications.settings import NotificationsSettings


def check_address(address: str) -> None:
    try:
        validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError:
        raise DeliveryFailure("invalid_address", temporary=False) from None


def classify_smtp(exc: BaseException) -> DeliveryFailure:
    """A failure of aiosmtplib, by SMTP reply code where there is one."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        temporary = bool(codes) and all(400 <= c < 500 for c in codes)
        code = codes[0] if codes else 0
        return DeliveryFailure(f"smtp_{code}", temporary=temporary, detail="recipient refused")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        temporary = 400 <= exc.code < 500 or exc.code < 200  # -1 etc: no real reply
        return DeliveryFailure(f"smtp_{exc.code}", temporary=temporary, detail=type(exc).__name__)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DeliveryFailure("smtp_timeout", temporary=True)
    if isinstance(exc, OSError):  # refused, reset, disconnected, DNS
        return DeliveryFailure("smtp_unreachable", temporary=True, detail=type(exc).__name__)
    if isinstance(exc, aiosmtplib.SMTPException):
        return DeliveryFailure("smtp_error", temporary=True, detail=type(exc).__name__)
    return DeliveryFailure("smtp_error", temporary=True, detail=type(exc).__name__)


class EmailChannel:
    name = "email"

    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage, to: str) -> None:
        check_address(to)
        s = self.settings
        kwargs: dict[str, Any] = {
            "hostname": s.smtp_host,
            "port": s.smtp_port,
            "timeout": s.smtp_timeout_s,
            "use_tls": s.smtp_tls == "tls",
            "start_tls": True if s.smtp_tls == "starttls" else False,
            "validate_certs": s.smtp_validate_certs,
            "local_hostname": s.message_id_domain,
        }
        if s.smtp_tls != "none":
            kwargs["tls_context"] = ssl.create_default_context()
            if not s.smtp_validate_certs:
                kwargs["tls_context"].check_hostname = False
                kwargs["tls_context"].verify_mode = ssl.CERT_NONE
        if s.smtp_username:
            kwargs["username"] = s.smtp_username
            kwargs["password"] = s.smtp_password or ""
        try:
            async with asyncio.timeout(s.smtp_timeout_s * 2):
                await aiosmtplib.send(message, recipients=[to], **kwargs)
        except Exception as exc:
            raise classify_smtp(exc) from None


def chat_payload(fmt: str, text: str) -> dict[str, Any]:
    """The JSON body a group robot takes (WeCom and DingTalk share one shape)."""
    if fmt in ("wecom", "dingtalk"):
        return {"msgtype": "text", "text": {"content": text}}
    if fmt == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    return {"text": text}  # slack and the many robots that copy it


# WeCom answers HTTP 200 with an error code; these are worth another try.
_RETRYABLE_ROBOT_CODES = frozenset({-1, 45009, 45033})


class ChatChannel:
    name = "chat"

    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    @property
    def configured(self) -> bool:
        return bool(self.settings.chat_webhook_url)

    async def send(self, text: str) -> None:
        url = self.settings.chat_webhook_url
        if not url:
            raise DeliveryFailure("chat_not_configured", temporary=False)
        body = chat_payload(self.settings.chat_format, text)
        try:
            async with httpx.AsyncClient(timeout=self.settings.chat_timeout_s) as client:
                response = await client.post(url, json=body)
        except httpx.TimeoutException:
            raise DeliveryFailure("chat_timeout", temporary=True) from None
        except httpx.HTTPError as exc:
            raise DeliveryFailure(
                "chat_unreachable", temporary=True, detail=type(exc).__name__
            ) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise DeliveryFailure(f"chat_http_{status}", temporary=True)
        if status >= 400:
            raise DeliveryFailure(f"chat_http_{status}", temporary=False)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = answer.get("errcode", answer.get("code", 0)) if isinstance(answer, dict) else 0
        if code not in (0, None):
            raise DeliveryFailure(f"chat_errcode_{code}", temporary=code in _RETRYABLE_ROBOT_CODES)
