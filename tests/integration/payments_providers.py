"""Payment providers as the tests play them: own RSA keys, signing as each provider documents.

- WeChat Pay API v3: the notification's ``resource`` is encrypted with AEAD_AES_256_GCM
  under the merchant's API v3 key; the HTTP body is signed with the platform private key
  (SHA256 with RSA) over ``timestamp\\nnonce\\nbody\\n``, sent in the Wechatpay-* headers.
- Alipay: the parameters but ``sign`` and ``sign_type``, sorted, ``k=v`` joined by ``&``,
  signed with Alipay's private key (RSA2 = SHA256withRSA), form-encoded.
- The generic webhook: ``Holdspace-Signature: t=<ts>,v1=<hex HMAC-SHA256(t.body)>``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from payments.verify import alipay_sign_content, generic_signature, wechat_message

GENERIC_SECRET = "test-only-generic-webhook-secret-0123456789abcdef"


def new_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


class WechatPay:
    def __init__(self) -> None:
        self.private_key = new_private_key()
        self.apiv3_key = secrets.token_hex(16)  # 32 characters, as the merchant sets it
        self.serial = "PUB_KEY_ID_" + secrets.token_hex(8).upper()
        self.mchid = "1900000109"
        self.appid = "wxd678efh567hg6787"

    def env(self) -> dict[str, str]:
        return {
            "WECHATPAY_PLATFORM_PUBLIC_KEY": public_pem(self.private_key),
            "WECHATPAY_PLATFORM_SERIAL": self.serial,
            "WECHATPAY_APIV3_KEY": self.apiv3_key,
            "WECHATPAY_MCHID": self.mchid,
            "WECHATPAY_APPID": self.appid,
        }

    def body(
        self,
        *,
        out_trade_no: str,
        total: int,
        currency: str = "CNY",
        transaction_id: str | None = None,
        notification_id: str | None = None,
        trade_state: str = "SUCCESS",
        mchid: str | None = None,
        apiv3_key: str | None = None,
    ) -> bytes:
        transaction = {
            "appid": self.appid,
            "mchid": mchid or self.mchid,
            "out_trade_no": out_trade_no,
            "transaction_id": transaction_id or "4200" + secrets.token_hex(12),
            "trade_type": "NATIVE",
            "trade_state": trade_state,
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": "2025-05-01T10:00:00+08:00",
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": total, "payer_total": total, "currency": currency},
        }
        nonce = secrets.token_hex(6)
        sealed = AESGCM((apiv3_key or self.apiv3_key).encode()).encrypt(
            nonce.encode(), json.dumps(transaction).encode(), b"transaction"
        )
        notice = {
            "id": notification_id or str(uuid.uuid4()),
            "create_time": "2025-05-01T10:00:01+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS"
            if trade_state == "SUCCESS"
            else "TRANSACTION.CLOSED",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        }
        return json.dumps(notice).encode()

    def headers(
        self,
        body: bytes,
        *,
        timestamp: int | None = None,
        key: rsa.RSAPrivateKey | None = None,
        serial: str | None = None,
    ) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(16)
        signature = rsa_sign(key or self.private_key, wechat_message(ts, nonce, body))
        return {
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": serial or self.serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }


class Alipay:
    def __init__(self) -> None:
        self.private_key = new_private_key()
        self.app_id = "2021000117600001"
        self.seller_id = "2088102119685838"

    def env(self) -> dict[str, str]:
        # Base64 of the PEM: the other form a key may be given in.
        return {
            "ALIPAY_PUBLIC_KEY": base64.b64encode(public_pem(self.private_key).encode()).decode(),
            "ALIPAY_APP_ID": self.app_id,
            "ALIPAY_SELLER_ID": self.seller_id,
        }

    def params(
        self,
        *,
        out_trade_no: str,
        total_amount: str,
        trade_no: str | None = None,
        trade_status: str = "TRADE_SUCCESS",
        app_id: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **extra: str,
    ) -> dict[str, str]:
        params = {
            "notify_time": "2025-05-01 10:00:02",
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "app_id": app_id or self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": trade_no or "2025050122001" + secrets.token_hex(8),
            "out_trade_no": out_trade_no,
            "buyer_id": "2088102116773037",
            "seller_id": self.seller_id,
            "trade_status": trade_status,
            "total_amount": total_amount,
            "receipt_amount": total_amount,
            "subject": "Holdspace",
            "gmt_create": "2025-05-01 10:00:00",
            "gmt_payment": "2025-05-01 10:00:01",
            **extra,
        }
        params["sign"] = rsa_sign(
            key or self.private_key, alipay_sign_content(params).encode("utf-8")
        )
        params["sign_type"] = "RSA2"
        return params

    @staticmethod
    def form(params: dict[str, str]) -> bytes:
        return urlencode(params).encode()


def generic_body(
    *,
    reference: str,
    amount_minor: int,
    currency: str = "CNY",
    transaction_id: str | None = None,
    notification_id: str | None = None,
    type_: str = "payment.succeeded",
) -> bytes:
    return json.dumps(
        {
            "id": notification_id or "evt_" + secrets.token_hex(8),
            "type": type_,
            "reference": reference,
            "amount_minor": amount_minor,
            "currency": currency,
            "transaction_id": transaction_id or "txn_" + secrets.token_hex(8),
        }
    ).encode()


def generic_headers(
    body: bytes, *, timestamp: int | None = None, secret: str = GENERIC_SECRET
) -> dict[str, Any]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "Holdspace-Signature": f"t={ts},v1={generic_signature(secret.encode(), ts, body)}",
    }
