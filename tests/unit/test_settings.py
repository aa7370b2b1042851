import pytest
from pydantic import ValidationError

from shared.settings import DEV_JWT_SECRET, CommonSettings, ServiceSettings, env_names
from shared.topology import SERVICES


def test_development_runs_on_embedded_defaults_when_said_explicitly(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "development")
    settings = ServiceSettings()
    assert settings.jwt_secret == DEV_JWT_SECRET and not settings.is_production


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_environment_is_refused_naming_the_variable(monkeypatch, value) -> None:
    if value is None:
        monkeypatch.delenv("HOLDSPACE_ENV", raising=False)
    else:
        monkeypatch.setenv("HOLDSPACE_ENV", value)
    monkeypatch.setenv("JWT_SECRET", "a-secret-that-must-not-be-echoed-0123456789")
    with pytest.raises(ValidationError) as refused:
        ServiceSettings()
    assert "HOLDSPACE_ENV is not set" in str(refused.value)
    assert "a-secret-that-must-not-be-echoed" not in str(refused.value)


@pytest.mark.parametrize("value", ["test", "staging", "dev", "prod"])
def test_an_unknown_environment_is_refused(monkeypatch, value) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", value)
    with pytest.raises(ValidationError, match="holdspace_env"):
        ServiceSettings()


@pytest.mark.parametrize("name", ["JWT_SECRET", "ENCRYPTION_KEY", "BLIND_INDEX_KEY"])
def test_production_refuses_each_development_secret_without_echoing_the_others(
    monkeypatch, name
) -> None:
    from shared.settings import DEV_BLIND_INDEX_KEY, DEV_ENCRYPTION_KEY

    dev = {
        "JWT_SECRET": DEV_JWT_SECRET,
        "ENCRYPTION_KEY": DEV_ENCRYPTION_KEY,
        "BLIND_INDEX_KEY": DEV_BLIND_INDEX_KEY,
    }
    monkeypatch.setenv("HOLDSPACE_ENV", "production")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://svc:pw@mq:5672/")
    for other in dev:
        monkeypatch.setenv(other, f"real-secret-{other.lower()}-0123456789abcdef")
    monkeypatch.setenv(name, dev[name])  # one development value, given on purpose
    with pytest.raises(ValidationError) as refused:
        ServiceSettings()
    assert f"{name} must be set in production" in str(refused.value)
    assert "real-secret" not in str(refused.value)


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


def test_production_refuses_a_token_key_short_enough_to_guess(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "production")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://svc:pw@mq:5672/")
    for name in ("ENCRYPTION_KEY", "BLIND_INDEX_KEY"):
        monkeypatch.setenv(name, "x" * 44)
    monkeypatch.setenv("JWT_SECRET", "REPLACE_ME")  # the placeholder of the k8s Secret
    with pytest.raises(ValidationError, match="JWT_SECRET must be at least 32 bytes") as refused:
        ServiceSettings()
    assert "REPLACE_ME" not in str(refused.value)
    monkeypatch.setenv("JWT_SECRET", "k" * 32)
    assert ServiceSettings().is_production


def test_retry_delays_double_up_to_the_cap(monkeypatch) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", "6")
    monkeypatch.setenv("RETRY_BASE_MS", "500")
    monkeypatch.setenv("RETRY_MAX_MS", "3000")
    assert ServiceSettings().retry_delays_ms() == [500, 1000, 2000, 3000, 3000]


def test_env_names_list_every_variable() -> None:
    names = env_names(CommonSettings)
    assert {"RABBITMQ_URL", "MONGODB_URL", "HOLDSPACE_ENV", "JWT_SECRET"} <= names


def _start_as_the_image(service: str, **env: str):
    """What the image does first: build the app, whose settings check the environment."""
    import subprocess
    import sys

    code = f"from {service}.app import create_app; create_app()"
    clean = {"PATH": "/usr/bin:/bin", "HOLDSPACE_ENV": "production", **env}
    clean = {k: v for k, v in clean.items() if v is not None}  # None: left unset
    return subprocess.run(
        [sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("service", [*SERVICES, "web"])
def test_the_image_refuses_to_start_on_development_secrets(service: str) -> None:
    started = _start_as_the_image(service, RABBITMQ_URL="amqp://svc:pw@mq:5672/")
    assert started.returncode != 0
    assert "must be set in production" in started.stderr, started.stderr[-500:]


@pytest.mark.parametrize("service", [*SERVICES, "web"])
def test_a_service_told_no_environment_refuses_to_start(service: str) -> None:
    started = _start_as_the_image(service, HOLDSPACE_ENV=None)  # type: ignore[arg-type]
    assert started.returncode != 0
    assert "HOLDSPACE_ENV is not set" in started.stderr, started.stderr[-500:]
    dev = _start_as_the_image(service, HOLDSPACE_ENV="development")
    assert dev.returncode == 0, dev.stderr[-500:]


def test_the_image_refuses_to_start_notifications_with_no_coordinator_channel() -> None:
    secrets = {name: "x" * 44 for name in ("JWT_SECRET", "ENCRYPTION_KEY", "BLIND_INDEX_KEY")}
    started = _start_as_the_image(
        "notifications",
        RABBITMQ_URL="amqp://svc:pw@mq:5672/",
        SMTP_HOST="127.0.0.1",
        **secrets,
    )
    assert started.returncode != 0
    assert "COORDINATOR_EMAILS or CHAT_WEBHOOK_URL" in started.stderr, started.stderr[-500:]
    with_channel = _start_as_the_image(
        "notifications",
        RABBITMQ_URL="amqp://svc:pw@mq:5672/",
        SMTP_HOST="127.0.0.1",
        COORDINATOR_EMAILS="ana@example.org",
        **secrets,
    )
    assert with_channel.returncode == 0, with_channel.stderr[-500:]


def test_operator_commands_find_the_system_scripts_up_runs(monkeypatch, tmp_path) -> None:
    from shared.ops.settings import OpsSettings
    from shared.settings import for_running_system

    run = tmp_path / "run"
    run.mkdir()
    (run / "up.env").write_text(
        "MONGODB_URL='mongodb://127.0.0.1:27999/'\nREGISTRATION_URL=http://127.0.0.1:18001\n"
    )
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.delenv("MONGODB_URL", raising=False)
    monkeypatch.delenv("REGISTRATION_URL", raising=False)
    found = for_running_system(OpsSettings)
    assert found.mongodb_url == "mongodb://127.0.0.1:27999/"
    assert found.registration_url == "http://127.0.0.1:18001"
    monkeypatch.setenv("MONGODB_URL", "mongodb://db.example:27017/")  # the shell wins
    assert for_running_system(OpsSettings).mongodb_url == "mongodb://db.example:27017/"
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "nothing-running"))
    assert for_running_system(OpsSettings).registration_url == "http://127.0.0.1:8001"
