"""Provider notification verification, against notifications signed as each provider does."""

from __future__ import annotations

import base64
import json
import random
import time

import pytest
from payments.settings import DEV_GENERIC_WEBHOOK_SECRET, PaymentsSettings
from payments.verify import (
    MalformedNotification,
    VerificationError,
    alipay_sign_content,
    load_public_key,
    parse_form,
    verify_alipay,
    verify_generic,
    verify_wechatpay,
)
from pydantic import ValidationError

from tests.integration.payments_providers import (
    GENERIC_SECRET,
    Alipay,
    WechatPay,
    generic_body,
    generic_headers,
    new_private_key,
    public_pem,
)


@pytest.fixture(scope="module")
def wechat() -> WechatPay:
    return WechatPay()


@pytest.fixture(scope="module")
def alipay() -> Alipay:
    return Alipay()


def check_wechat(wechat: WechatPay, body: bytes, headers: dict, **kw):
    return verify_wechatpay(
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        public_key=load_public_key(public_pem(wechat.private_key)),
        serial=kw.get("serial", wechat.serial),
        apiv3_key=kw.get("apiv3_key", wechat.apiv3_key).encode(),
        now=kw.get("now", time.time()),
        tolerance_s=300,
    )


# --- WeChat Pay ---------------------------------------------------------------------------


def test_wechatpay_notification_verifies_and_decrypts(wechat: WechatPay) -> None:
    body = wechat.body(out_trade_no="HS-AAAA-BBBB", total=90000, transaction_id="4200001")
    tx = check_wechat(wechat, body, wechat.headers(body))
    assert (tx.out_trade_no, tx.amount_total, tx.currency) == ("HS-AAAA-BBBB", 90000, "CNY")
    assert (tx.transaction_id, tx.trade_state, tx.mchid) == ("4200001", "SUCCESS", wechat.mchid)
    assert tx.event_type == "TRANSACTION.SUCCESS"


def test_wechatpay_refuses_a_tampered_body(wechat: WechatPay) -> None:
    body = wechat.body(out_trade_no="HS-AAAA-BBBB", total=90000)
    headers = wechat.headers(body)
    tampered = body.replace(b'"summary"', b'"Summary"')
    with pytest.raises(VerificationError, match="signature"):
        check_wechat(wechat, tampered, headers)


def test_wechatpay_refuses_another_key_a_wrong_serial_and_missing_headers(wechat) -> None:
    body = wechat.body(out_trade_no="HS-AAAA-BBBB", total=1)
    with pytest.raises(VerificationError, match="signature"):
        check_wechat(wechat, body, wechat.headers(body, key=new_private_key()))
    with pytest.raises(VerificationError, match="Serial"):
        check_wechat(wechat, body, wechat.headers(body, serial="OTHER"))
    headers = wechat.headers(body)
    del headers["Wechatpay-Signature"]
    with pytest.raises(VerificationError, match="missing"):
        check_wechat(wechat, body, headers)
    probe = wechat.headers(body)
    probe["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + probe["Wechatpay-Signature"]
    with pytest.raises(VerificationError):
        check_wechat(wechat, body, probe)


def test_wechatpay_refuses_a_stale_or_future_timestamp(wechat: WechatPay) -> None:
    body = wechat.body(out_trade_no="HS-AAAA-BBBB", total=1)
    for skew in (-301, 301):
        headers = wechat.headers(body, timestamp=int(time.time()) + skew)
        with pytest.raises(VerificationError) as caught:
            check_wechat(wechat, body, headers)
        assert caught.value.stale


def test_wechatpay_resource_under_another_apiv3_key_does_not_decrypt(wechat) -> None:
    body = wechat.body(out_trade_no="HS-AAAA-BBBB", total=1, apiv3_key="x" * 32)
    with pytest.raises(VerificationError, match="decrypt"):
        check_wechat(wechat, body, wechat.headers(body))


def test_wechatpay_signed_but_malformed_is_malformed(wechat: WechatPay) -> None:
    for body in (b"not json", json.dumps({"id": "x"}).encode(), b"[]"):
        with pytest.raises(MalformedNotification):
            check_wechat(wechat, body, wechat.headers(body))


# --- Alipay ---------------------------------------------------------------------------------


def test_alipay_sign_content_is_sorted_without_sign_and_sign_type() -> None:
    params = {"b": "2", "sign": "s", "a": "1", "sign_type": "RSA2", "c": ""}
    assert alipay_sign_content(params) == "a=1&b=2&c="


def test_alipay_notification_verifies_through_the_form(alipay: Alipay) -> None:
    params = alipay.params(out_trade_no="HS-AAAA-BBBB", total_amount="900.00", body="大乐透 2.1")
    parsed = parse_form(Alipay.form(params))
    assert parsed == params
    key = load_public_key(alipay.env()["ALIPAY_PUBLIC_KEY"])  # base64 of the PEM
    verify_alipay(parsed, key)


def test_alipay_refuses_tampering_other_keys_and_other_sign_types(alipay: Alipay) -> None:
    key = load_public_key(public_pem(alipay.private_key))
    params = alipay.params(out_trade_no="HS-AAAA-BBBB", total_amount="900.00")
    with pytest.raises(VerificationError):
        verify_alipay({**params, "total_amount": "0.01"}, key)
    with pytest.raises(VerificationError):
        verify_alipay({**params, "extra": "added"}, key)
    with pytest.raises(VerificationError):
        verify_alipay(alipay.params(out_trade_no="x", total_amount="1", key=new_private_key()), key)
    with pytest.raises(VerificationError, match="RSA2"):
        verify_alipay({**params, "sign_type": "RSA"}, key)
    with pytest.raises(VerificationError, match="missing"):
        verify_alipay({k: v for k, v in params.items() if k != "sign"}, key)


def test_alipay_form_with_a_repeated_parameter_is_malformed() -> None:
    with pytest.raises(MalformedNotification):
        parse_form(b"a=1&a=2")
    with pytest.raises(MalformedNotification):
        parse_form(b"\xff\xfe")


# --- the generic webhook ----------------------------------------------------------------------


def check_generic(body: bytes, header: str, now: float | None = None) -> int:
    return verify_generic(
        header=header,
        body=body,
        secret=GENERIC_SECRET.encode(),
        now=time.time() if now is None else now,
        tolerance_s=300,
        future_s=60,
    )


def test_generic_signature_verifies_and_refuses_tampering() -> None:
    body = generic_body(reference="HS-AAAA-BBBB", amount_minor=100)
    header = generic_headers(body)["Holdspace-Signature"]
    assert check_generic(body, header) > 0
    with pytest.raises(VerificationError, match="does not verify"):
        check_generic(body.replace(b"100", b"900"), header)
    other = generic_headers(body, secret="another-secret-" + "x" * 32)["Holdspace-Signature"]
    with pytest.raises(VerificationError):
        check_generic(body, other)


def test_generic_accepts_any_of_several_signatures_while_rotating() -> None:
    body = generic_body(reference="HS-AAAA-BBBB", amount_minor=100)
    header = generic_headers(body)["Holdspace-Signature"]
    t, v1 = header.split(",")
    assert check_generic(body, f"{t},v1=deadbeef,{v1}") > 0


def test_generic_refuses_old_and_future_timestamps_and_bad_headers() -> None:
    body = generic_body(reference="HS-AAAA-BBBB", amount_minor=100)
    now = time.time()
    for ts in (int(now) - 301, int(now) + 61):
        header = generic_headers(body, timestamp=ts)["Holdspace-Signature"]
        with pytest.raises(VerificationError) as caught:
            check_generic(body, header, now)
        assert caught.value.stale
    for header in ("", "v1=abc", "t=abc,v1=abc", "t=1"):
        with pytest.raises(VerificationError):
            check_generic(body, header, now)


FORGERIES = 1000


def test_a_thousand_forged_or_tampered_generic_notifications_are_all_refused() -> None:
    # Matrix row 17: every byte of the body, the timestamp and the signature is fair game.
    rng = random.Random(17)
    body = generic_body(reference="HS-AAAA-BBBB", amount_minor=90000)
    header = generic_headers(body)["Holdspace-Signature"]
    t, v1 = header.split(",")
    refused = 0
    for i in range(FORGERIES):
        forged_body, forged_header = body, header
        match i % 4:
            case 0:  # one byte of the body changed
                at = rng.randrange(len(body))
                forged_body = body[:at] + bytes([body[at] ^ rng.randrange(1, 256)]) + body[at + 1 :]
            case 1:  # one hex digit of the signature changed
                sig = list(v1.removeprefix("v1="))
                at = rng.randrange(len(sig))
                sig[at] = rng.choice([c for c in "0123456789abcdef" if c != sig[at]])
                forged_header = f"{t},v1={''.join(sig)}"
            case 2:  # a signature of random bytes
                forged_header = f"{t},v1={rng.randbytes(32).hex()}"
            case 3:  # the signed timestamp moved (a replay dressed as new)
                forged_header = f"t={int(t.removeprefix('t=')) + rng.randrange(1, 200)},{v1}"
        with pytest.raises(VerificationError):
            check_generic(forged_body, forged_header)
        refused += 1
    assert refused == FORGERIES
    assert check_generic(body, header) > 0  # the genuine one still verifies


# --- keys and settings ------------------------------------------------------------------------


def test_public_keys_load_from_pem_base64_pem_and_base64_der() -> None:
    pem = public_pem(new_private_key())
    der_b64 = base64.b64encode(load_public_key(pem).public_bytes(*_der_args())).decode()
    for text in (pem, base64.b64encode(pem.encode()).decode(), der_b64):
        assert load_public_key(text).key_size == 2048
    with pytest.raises(ValueError):
        load_public_key("not a key")


def _der_args():
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def test_settings_refuse_development_secrets_in_production(monkeypatch) -> None:
    from shared.settings import DEV_BLIND_INDEX_KEY, DEV_ENCRYPTION_KEY, DEV_JWT_SECRET

    assert DEV_GENERIC_WEBHOOK_SECRET
    real = {
        "HOLDSPACE_ENV": "production",
        "RABBITMQ_URL": "amqp://svc:pw@mq:5672/",
        "JWT_SECRET": "j" * 40,
        "ENCRYPTION_KEY": base64.b64encode(b"e" * 32).decode(),
        "BLIND_INDEX_KEY": base64.b64encode(b"b" * 32).decode(),
    }
    assert DEV_JWT_SECRET not in real.values() and DEV_ENCRYPTION_KEY not in real.values()
    assert DEV_BLIND_INDEX_KEY not in real.values()
    for name, value in real.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="WECHATPAY_APIV3_KEY"):
        PaymentsSettings()
    monkeypatch.setenv("WECHATPAY_APIV3_KEY", "w" * 32)
    with pytest.raises(ValidationError, match="GENERIC_WEBHOOK_SECRET"):
        PaymentsSettings()
    monkeypatch.setenv("GENERIC_WEBHOOK_SECRET", "g" * 40)
    settings = PaymentsSettings()
    assert (settings.service_name, settings.http_port) == ("payments", 8003)
    monkeypatch.setenv("WECHATPAY_APIV3_KEY", "short")
    with pytest.raises(ValidationError, match="32 bytes"):
        PaymentsSettings()
