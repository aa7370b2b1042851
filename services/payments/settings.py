"""Settings of the payments service (environment variables, see shared/settings.py).

Provider keys are read here: the WeChat Pay platform public key and the Alipay public key
as PEM text (or base64 of the PEM or DER), the WeChat Pay API v3 key as its 32 characters,
the generic webhook's HMAC secret as text. A provider whose verification key is not set is
switched off: its webhook answers 503 and nothing is confirmed through it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.settings import ServiceSettings

# Development-only secrets: known values, refused in production (like shared/settings.py's).
DEV_WECHATPAY_APIV3_KEY = "dev-only-wechatpay-apiv3-key-32b"
DEV_GENERIC_WEBHOOK_SECRET = "dev-only-generic-webhook-secret-change-me-0123456789"
PAYMENTS_DEV_SECRETS = {DEV_WECHATPAY_APIV3_KEY, DEV_GENERIC_WEBHOOK_SECRET}


class PaymentsSettings(ServiceSettings):
    service_name: str = Field("payments", description="fixed: names the queue and database")
    http_port: int = Field(8003, description="port of the payments API")

    payment_ttl_s: int = Field(
        72 * 3600, description="how long a request stays payable when no seat hold is given", ge=60
    )
    payment_timezone: str = Field(
        "Asia/Shanghai", description="time zone of the due date in payment instructions"
    )

    # WeChat Pay API v3
    wechatpay_mchid: str = Field("", description="our WeChat Pay merchant id (mchid)")
    wechatpay_appid: str = Field("", description="our WeChat Pay app id; empty: not checked")
    wechatpay_apiv3_key: str = Field(
        DEV_WECHATPAY_APIV3_KEY, description="API v3 key (32 characters) for AEAD_AES_256_GCM"
    )
    wechatpay_platform_public_key: str = Field(
        "", description="WeChat Pay platform public key, PEM or base64; empty: webhook off"
    )
    wechatpay_platform_serial: str = Field(
        "", description="serial (or public key id) the platform key is announced with"
    )
    wechatpay_tolerance_s: int = Field(300, description="largest Wechatpay-Timestamp skew", ge=1)

    # Alipay
    alipay_app_id: str = Field("", description="our Alipay app_id; notifications must name it")
    alipay_seller_id: str = Field("", description="our Alipay seller_id; empty: not checked")
    alipay_public_key: str = Field(
        "", description="Alipay public key (RSA2), PEM or base64; empty: webhook off"
    )

    # A generic signed webhook for other providers
    generic_webhook_secret: str = Field(
        DEV_GENERIC_WEBHOOK_SECRET, description="HMAC-SHA256 secret of /webhooks/generic"
    )
    generic_tolerance_s: int = Field(300, description="oldest accepted signature age", ge=1)
    generic_future_s: int = Field(60, description="how far ahead a timestamp may be", ge=0)

    @model_validator(mode="after")
    def _refuse_payment_dev_secrets_in_production(self) -> PaymentsSettings:
        if len(self.wechatpay_apiv3_key.encode()) != 32:
            raise ValueError("WECHATPAY_APIV3_KEY must be 32 bytes")
        if len(self.generic_webhook_secret.encode()) < 32:
            raise ValueError("GENERIC_WEBHOOK_SECRET must be at least 32 bytes")
        if not self.is_production:
            return self
        for name in ("wechatpay_apiv3_key", "generic_webhook_secret"):
            if getattr(self, name) in PAYMENTS_DEV_SECRETS:
                raise ValueError(f"{name.upper()} must be set in production")
        if self.wechatpay_platform_public_key and not self.wechatpay_mchid:
            raise ValueError("WECHATPAY_MCHID must be set when WeChat Pay is on")
        if self.alipay_public_key and not self.alipay_app_id:
            raise ValueError("ALIPAY_APP_ID must be set when Alipay is on")
        return self
