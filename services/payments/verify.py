"""Verifying provider notifications as each provider documents it (pure: no I/O).

- WeChat Pay API v3 payment notification (pay.weixin.qq.com, "支付通知" / "签名验证" /
  "证书和回调报文解密" of API v3): the signature in ``Wechatpay-Signature`` (base64,
  SHA256 with RSA, PKCS#1 v1.5) is over ``Wechatpay-Timestamp + "\\n" + Wechatpay-Nonce +
  "\\n" + body + "\\n"`` and is checked with the platform public key named by
  ``Wechatpay-Serial``; a timestamp far from now is refused (replay); the ``resource`` is
  then decrypted with AEAD_AES_256_GCM, key = the API v3 key, with the resource's ``nonce``
  and ``associated_data``; the ciphertext is base64 and ends with the 16-byte tag.
- Alipay asynchronous notification (opendocs.alipay.com "异步通知验签", docs.antom.com
  "Verifying the asynchronous notification"): form-encoded parameters; drop ``sign`` and
  ``sign_type``; sort the rest by key; join ``key=value`` with ``&`` (values url-decoded);
  verify ``sign`` (base64, SHA256withRSA = RSA2) with Alipay's public key; answer ``success``.
- The generic webhook (our own scheme, after Stripe's): ``Holdspace-Signature:
  t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + raw body)>`` (several ``v1`` allowed
  while a secret is rotated), compared in constant time; old or far-future ``t`` refused.

Each verifier raises :class:`VerificationError` with a short reason that is safe to log
and to answer with (it never contains the body or a key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class VerificationError(Exception):
    """The notification is not authentic (bad or missing signature, stale, undecryptable)."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stale = stale


class MalformedNotification(Exception):
    """Authentic, but not a notification we can read (answered 400, never 500)."""


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM text, or from base64 of the PEM or of the DER."""
    raw = text.strip().encode()
    if not raw.startswith(b"-----BEGIN"):
        try:
            raw = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("public key is neither PEM nor base64") from None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw.strip())
        else:
            key = serialization.load_der_public_key(raw)
    except ValueError:
        raise ValueError("public key could not be read") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("public key is not an RSA key")
    return key


def _rsa_sha256_ok(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


# --- WeChat Pay API v3 ----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderKeys:
    """The providers' public keys notifications are verified with; None: not configured."""

    wechatpay: rsa.RSAPublicKey | None
    alipay: rsa.RSAPublicKey | None

    @classmethod
    def from_pem(cls, wechatpay: str | None, alipay: str | None) -> ProviderKeys:
        return cls(
            load_public_key(wechatpay) if wechatpay else None,
            load_public_key(alipay) if alipay else None,
        )


@dataclass(frozen=True)
class WechatTransaction:
    notification_id: str
    event_type: str
    out_trade_no: str
    transaction_id: str
    trade_state: str
    mchid: str
    appid: str
    amount_total: int
    currency: str


def wechat_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


def verify_wechatpay(
    *,
    headers: Mapping[str, str],
    body: bytes,
    public_key: rsa.RSAPublicKey,
    serial: str,
    apiv3_key: bytes,
    now: float,
    tolerance_s: int,
) -> WechatTransaction:
    timestamp = headers.get("wechatpay-timestamp", "")
    nonce = headers.get("wechatpay-nonce", "")
    signature = headers.get("wechatpay-signature", "")
    sent_serial = headers.get("wechatpay-serial", "")
    if not (timestamp and nonce and signature and sent_serial):
        raise VerificationError("missing Wechatpay-* signature headers")
    if serial and sent_serial != serial:
        raise VerificationError("unknown Wechatpay-Serial")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise VerificationError("malformed Wechatpay-Timestamp")
    if abs(now - int(timestamp)) > tolerance_s:
        raise VerificationError("Wechatpay-Timestamp outside the tolerance", stale=True)
    if not _rsa_sha256_ok(public_key, wechat_message(timestamp, nonce, body), signature):
        raise VerificationError("signature does not verify")
    # Authentic from here on: what follows can only be malformed, not forged.
    try:
        notice = json.loads(body)
        resource = notice["resource"]
        if resource.get("algorithm") != "AEAD_AES_256_GCM":
            raise MalformedNotification("unsupported resource algorithm")
        ciphertext = base64.b64decode(resource["ciphertext"], validate=True)
        plain = AESGCM(apiv3_key).decrypt(
            resource["nonce"].encode(),
            ciphertext,
            (resource.get("associated_data") or "").encode() or None,
        )
    except InvalidTag:
        raise VerificationError("resource does not decrypt with the API v3 key") from None
    except MalformedNotification:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise MalformedNotification("not a WeChat Pay notification") from None
    try:
        tx = json.loads(plain)
        amount = tx["amount"]
        return WechatTransaction(
            notification_id=str(notice["id"]),
            event_type=str(notice.get("event_type", "")),
            out_trade_no=str(tx["out_trade_no"]),
            transaction_id=str(tx["transaction_id"]),
            trade_state=str(tx["trade_state"]),
            mchid=str(tx.get("mchid", "")),
            appid=str(tx.get("appid", "")),
            amount_total=_int(amount["total"]),
            currency=str(amount.get("currency") or "CNY"),
        )
    except (ValueError, KeyError, TypeError):
        raise MalformedNotification("not a WeChat Pay transaction") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a non-negative integer")
    return value


# --- Alipay ---------------------------------------------------------------------------


def parse_form(body: bytes) -> dict[str, str]:
    """Form-encoded parameters; a repeated key is refused (it would be ambiguous to sign)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        raise MalformedNotification("not form-encoded UTF-8") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise MalformedNotification("a parameter is repeated")
        params[key] = value
    return params


def alipay_sign_content(params: Mapping[str, str]) -> str:
    """The string Alipay signs: every parameter but sign and sign_type, sorted, k=v&k=v."""
    keys = sorted(k for k in params if k not in ("sign", "sign_type"))
    return "&".join(f"{k}={params[k]}" for k in keys)


def verify_alipay(params: Mapping[str, str], public_key: rsa.RSAPublicKey) -> None:
    if params.get("sign_type", "RSA2") != "RSA2":
        raise VerificationError("only sign_type RSA2 is accepted")
    signature = params.get("sign", "")
    if not signature:
        raise VerificationError("missing sign")
    charset = (params.get("charset") or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise VerificationError("only the utf-8 charset is accepted")
    content = alipay_sign_content(params).encode("utf-8")
    if not _rsa_sha256_ok(public_key, content, signature):
        raise VerificationError("signature does not verify")


# --- the generic webhook ------------------------------------------------------------------

GENERIC_HEADER = "holdspace-signature"


def generic_signature(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_generic(
    *,
    header: str | None,
    body: bytes,
    secret: bytes,
    now: float,
    tolerance_s: int,
    future_s: int,
) -> int:
    """Check the signature header; return its timestamp."""
    if not header:
        raise VerificationError("missing Holdspace-Signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise VerificationError("malformed Holdspace-Signature")
    if now - timestamp > tolerance_s:
        raise VerificationError("signature timestamp too old", stale=True)
    if timestamp - now > future_s:
        raise VerificationError("signature timestamp in the future", stale=True)
    expected = generic_signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates):
        raise VerificationError("signature does not verify")
    return timestamp
