"""What the benchmark sends: programs, cohorts, applications, events of the real sizes, and
WeChat Pay notifications signed as the provider signs them (its own RSA key pair).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from payments.verify import wechat_message
from registration.seed import RECOVERY_GROUP

from shared import events as ev
from shared.messaging import build_message
from shared.security import FieldCipher

CONSENT_REF = "recovery-group-consent"  # a form consent.seed publishes

# The recovery group as scripts/up seeds it (its consent form is seeded too), retitled.
PROGRAM: dict[str, Any] = {**RECOVERY_GROUP, "title": "Benchmark recovery group"}
assert PROGRAM["consent_form_ref"] == CONSENT_REF


def cohort_spec(label: str, capacity: int | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    start = now + timedelta(days=14)
    spec: dict[str, Any] = {
        "label": label,
        "sessions": [
            {
                "starts_at": (start + timedelta(weeks=w)).isoformat(),
                "ends_at": (start + timedelta(weeks=w, minutes=90)).isoformat(),
                "timezone": "Asia/Shanghai",
            }
            for w in range(6)
        ],
        "registration_opens_at": (now - timedelta(hours=1)).isoformat(),
        "registration_closes_at": (now + timedelta(days=10)).isoformat(),
    }
    if capacity is not None:
        spec["capacity"] = capacity
    return spec


def application(tag: str, n: int) -> dict[str, Any]:
    """A sign-up as the web client sends it; the email is unique per (tag, n)."""
    return {
        "name": f"Applicant {n}",
        "email": f"a{n}.{tag}@example.org",
        "chat_handle": f"wx_applicant_{n}",
        "age_attested": True,
        "safety_answers": {"self_harm": False, "unsafe_now": False},
        "privacy_notice_accepted": True,
        "language": "en",
        "timezone": "Asia/Shanghai",
    }


def sample_envelopes() -> list[ev.Envelope]:
    """One envelope of each event an enrollment causes, with realistic field sizes."""
    rid, cid, pid = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    money = ev.Money(amount_minor=90000, currency="CNY")
    sessions = [
        ev.Session(
            starts_at=now + timedelta(weeks=w),
            ends_at=now + timedelta(weeks=w, minutes=90),
            timezone="Asia/Shanghai",
        )
        for w in range(6)
    ]
    contact = ev.Contact(
        name="Applicant 123", email="a123.bench@example.org", chat_handle="wx_applicant_123"
    )
    datas: list[ev.EventData] = [
        ev.RegistrationSubmitted(
            registration_id=rid,
            cohort_id=cid,
            program_id=pid,
            contact=contact,
            cohort=ev.CohortRef(
                cohort_id=cid, program_id=pid, display_name="Wednesday group", sessions=sessions
            ),
            price=money,
            submitted_at=now,
        ),
        ev.RegistrationPendingReview(registration_id=rid, cohort_id=cid, hold_expires_at=now),
        ev.RegistrationApproved(
            registration_id=rid,
            cohort_id=cid,
            program_id=pid,
            consent_form_ref=CONSENT_REF,
            price=money,
            hold_expires_at=now,
        ),
        ev.ConsentRequested(
            registration_id=rid,
            signing_url=f"https://consent.example/consents/{rid}.{secrets.token_urlsafe(32)}",
            expires_at=now,
        ),
        ev.ConsentSigned(
            registration_id=rid,
            form_id=f"{CONSENT_REF}.en",
            form_version=1,
            text_sha256="ab" * 32,
            signed_at=now,
            price=money,
            hold_expires_at=now,
        ),
        ev.PaymentRequested(
            registration_id=rid,
            payment_id=str(uuid.uuid4()),
            amount=money,
            reference="HS-ABCD-EFGH",
            expires_at=now,
            instructions="Pay 900.00 CNY with WeChat Pay, reference HS-ABCD-EFGH, by 5 May.",
        ),
        ev.PaymentConfirmed(
            registration_id=rid,
            payment_id=str(uuid.uuid4()),
            amount=money,
            reference="HS-ABCD-EFGH",
            method="wechatpay",
            confirmed_at=now,
        ),
        ev.EnrollmentConfirmed(registration_id=rid, cohort_id=cid, program_id=pid, occurred_at=now),
    ]
    return [
        ev.make_envelope(d, source="holdspace/bench", correlation_id=rid, subject=rid)
        for d in datas
    ]


def sample_bodies() -> list[bytes]:
    """The services' event bodies as they travel (a personal event's data sealed)."""
    cipher = FieldCipher({"bench": secrets.token_bytes(32)}, "bench")
    return [build_message(e, cipher=cipher).body for e in sample_envelopes()]


# --- WeChat Pay, played by the benchmark ------------------------------------------------


class WechatPay:
    """A WeChat Pay platform: signs API v3 notifications with its own RSA key."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.apiv3_key = secrets.token_hex(16)  # 32 characters
        self.serial = "PUB_KEY_ID_" + secrets.token_hex(8).upper()
        self.mchid = "1900000109"
        self.appid = "wxd678efh567hg6787"

    def env(self) -> dict[str, str]:
        pem = (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        return {
            "WECHATPAY_PLATFORM_PUBLIC_KEY": pem,
            "WECHATPAY_PLATFORM_SERIAL": self.serial,
            "WECHATPAY_APIV3_KEY": self.apiv3_key,
            "WECHATPAY_MCHID": self.mchid,
            "WECHATPAY_APPID": self.appid,
        }

    def notification(self, *, out_trade_no: str, total: int, currency: str) -> tuple[bytes, dict]:
        """A TRANSACTION.SUCCESS notification: (body, headers)."""
        transaction = {
            "appid": self.appid,
            "mchid": self.mchid,
            "out_trade_no": out_trade_no,
            "transaction_id": "4200" + secrets.token_hex(12),
            "trade_type": "NATIVE",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": datetime.now(UTC).isoformat(timespec="seconds"),
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": total, "payer_total": total, "currency": currency},
        }
        nonce = secrets.token_hex(6)
        sealed = AESGCM(self.apiv3_key.encode()).encrypt(
            nonce.encode(), json.dumps(transaction).encode(), b"transaction"
        )
        body = json.dumps(
            {
                "id": str(uuid.uuid4()),
                "create_time": datetime.now(UTC).isoformat(timespec="seconds"),
                "resource_type": "encrypt-resource",
                "event_type": "TRANSACTION.SUCCESS",
                "summary": "支付成功",
                "resource": {
                    "original_type": "transaction",
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(sealed).decode(),
                    "associated_data": "transaction",
                    "nonce": nonce,
                },
            }
        ).encode()
        ts = str(int(time.time()))
        header_nonce = secrets.token_hex(16)
        signature = self.private_key.sign(
            wechat_message(ts, header_nonce, body), padding.PKCS1v15(), hashes.SHA256()
        )
        headers = {
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": header_nonce,
            "Wechatpay-Signature": base64.b64encode(signature).decode(),
            "Wechatpay-Serial": self.serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }
        return body, headers
