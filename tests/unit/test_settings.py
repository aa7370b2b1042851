import pytest
from pydantic import ValidationError

from shared.settings import DEV_JWT_SECRET, CommonSettings, ServiceSettings, env_names


def test_development_runs_on_embedded_defaults(monkeypatch) -> None:
    monkeypatch.delenv("HOLDSPACE_ENV", raising=False)
    settings = ServiceSettings()
    assert settings.jwt_secret == DEV_JWT_SECRET and not settings.is_production


def test_production_refuses_development_secrets(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "production")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://svc:pw@mq:5672/")
    with pytest.raises(ValidationError, match="JWT_SECRET must be set in production"):
        ServiceSettings()


def test_production_refuses_guest_broker_account(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "production")
    for name in ("JWT_SECRET", "ENCRYPTION_KEY", "BLIND_INDEX_KEY"):
        monkeypatch.setenv(name, "x" * 44)
    with pytest.raises(ValidationError, match="guest"):
        ServiceSettings()
    monkeypatch.setenv("RABBITMQ_URL", "amqp://svc:pw@mq:5672/")
    assert ServiceSettings().is_production


def test_retry_delays_double_up_to_the_cap(monkeypatch) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", "6")
    monkeypatch.setenv("RETRY_BASE_MS", "500")
    monkeypatch.setenv("RETRY_MAX_MS", "3000")
    assert ServiceSettings().retry_delays_ms() == [500, 1000, 2000, 3000, 3000]


def test_env_names_list_every_variable() -> None:
    names = env_names(CommonSettings)
    assert {"RABBITMQ_URL", "MONGODB_URL", "HOLDSPACE_ENV", "JWT_SECRET"} <= names
