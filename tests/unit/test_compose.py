"""docker-compose.yml and deploy/Dockerfile agree with the code; the run command's Procfile.

The expected environment is computed from the settings classes (``env_names``), not
copied: a setting added to the code and not to docker-compose.yml fails here, and
so does a default in docker-compose.yml that is no longer the code's.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import json
import re
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from honcho.environ import parse_procfile
from pydantic import TypeAdapter
from pydantic_settings import BaseSettings
from registration.settings import RegistrationSettings

from shared import devinfra, devrun, firstrun
from shared.settings import ServiceSettings, env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
PORTS = {
    "web": 8000,
    "registration": 8001,
    "consent": 8002,
    "payments": 8003,
    "notifications": 8004,
    "progress": 8005,
}
SECRETS = ("JWT_SECRET", "ENCRYPTION_KEY", "BLIND_INDEX_KEY")
# Set on purpose to something other than the code's default.
NOT_THE_CODES_DEFAULT = {
    "HOLDSPACE_ENV",
    "RABBITMQ_URL",
    "RABBITMQ_MANAGEMENT_URL",
    "MONGODB_URL",
    "LOG_FORMAT",
    "HTTP_HOST",
    "HTTP_PORT",
    "SERVICE_NAME",
    "ENCRYPTION_KEY_ID",
    "PUBLIC_BASE_URL",
    "COORDINATOR_CONSOLE_URL",
    "TRUSTED_PROXIES",  # compose's own network, where the code trusts this machine
    "OTEL_EXPORTER_OTLP_ENDPOINT",  # compose's trace viewer; the code exports nowhere
    # Compose's own network names, where the code's defaults are this machine's ports.
    "REGISTRATION_API_URL",
    "CONSENT_API_URL",
    "PAYMENTS_API_URL",
    "NOTIFICATIONS_API_URL",
    "PROGRESS_API_URL",
    *SECRETS,
}
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container side of each published port ("127.0.0.1:8001:8001" -> 8001)."""
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test")
    assert test, "no healthcheck"
    return " ".join(test) if isinstance(test, list) else test


def default_of(value: str) -> str | None:
    """``${NAME:-default}`` -> default; None for anything else."""
    m = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]*)\}", value)
    return m.group(1) if m else None


def settings_classes(service: str) -> list[type[BaseSettings]]:
    """The settings classes of a service that exists (services/<name>/app.py), else
    ServiceSettings: a service being written is held to the common variables only."""
    if not (ROOT / "services" / service / "app.py").is_file():
        return [ServiceSettings]
    module = importlib.import_module(f"{service}.settings")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj.__module__ == module.__name__
    ]
    return found or [ServiceSettings]


# --- docker-compose.yml ----------------------------------------------------------


@pytest.mark.parametrize("name", PORTS)
def test_each_service_is_there_with_its_port_and_a_healthcheck_on_healthz(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    port = PORTS[name]
    assert container_ports(service) == {port}
    assert service["environment"]["HTTP_PORT"] == str(port)
    assert service["environment"]["SERVICE_NAME"] == name
    # The address is the settings' alone (shared/serve.py): no --host or --port to disagree.
    assert service["command"] == ["python", "-m", name]
    assert (ROOT / "services" / name / "__main__.py").is_file()
    assert service["environment"]["HTTP_HOST"] == "0.0.0.0"
    assert service["stop_grace_period"] == "30s"
    assert f"127.0.0.1:{port}/healthz" in healthcheck_text(service)


@pytest.mark.parametrize("name", PORTS)
def test_a_service_is_pending_exactly_while_its_code_does_not_exist(
    services: dict[str, Any], name: str
) -> None:
    exists = (ROOT / "services" / name / "app.py").is_file()
    pending = "pending" in services[name].get("profiles", [])
    assert pending != exists, (
        f"services/{name}/app.py {'exists' if exists else 'does not exist'}: "
        f"{'remove' if exists else 'add'} `profiles: [pending]` on {name} in docker-compose.yml"
    )


def test_rabbitmq_and_mongo_are_there_with_healthchecks(services: dict[str, Any]) -> None:
    rabbitmq, mongo = services["rabbitmq"], services["mongo"]
    assert rabbitmq["image"] == "rabbitmq:3.13-management"
    assert "check_port_connectivity" in healthcheck_text(rabbitmq)
    assert mongo["image"] == "mongo:7.0"
    start = " ".join(mongo["entrypoint"])
    assert "--replSet rs0" in start and "--keyFile" in start  # a replica set with auth
    check = healthcheck_text(mongo)
    assert "rs.initiate" in check and "isWritablePrimary" in check
    assert "--authenticationDatabase admin" in check


DB_USERS = ("registration", "consent", "payments", "notifications", "progress", "web")


def test_mongo_runs_with_authentication_and_a_required_administrator_password(
    services: dict[str, Any],
) -> None:
    env = services["mongo"]["environment"]
    # The image turns authentication on when it creates this administrator.
    assert env["MONGO_INITDB_ROOT_PASSWORD"].startswith("${MONGO_ROOT_PASSWORD:?")
    assert env["MONGO_INITDB_ROOT_USERNAME"] == "${MONGO_ROOT_USER:-root}"
    assert "mongo-key" in {v.split(":")[0] for v in services["mongo"]["volumes"]}


@pytest.mark.parametrize("name", DB_USERS)
def test_each_service_connects_to_mongo_as_its_own_user_on_its_own_database(
    services: dict[str, Any], name: str
) -> None:
    from urllib.parse import parse_qs

    env = services[name]["environment"]
    url = re.fullmatch(
        r"mongodb://([^:]+):(\$\{[^}]+\})@mongo:27017/([^?]+)\?(.*)", env["MONGODB_URL"]
    )
    assert url, env["MONGODB_URL"]
    user, password, database, query = url.groups()
    assert user == name
    assert password == f"${{MONGO_{name.upper()}_PASSWORD:?set MONGO_{name.upper()}_PASSWORD}}"
    assert database == f"holdspace_{name}"
    assert parse_qs(query)["authSource"] == [f"holdspace_{name}"]
    # the database the code uses is the one the user may use
    assert env.get("HOLDSPACE_DB_PREFIX", "holdspace_") == "holdspace_"
    assert services[name]["depends_on"]["mongo-users"]["condition"] == (
        "service_completed_successfully"
    )


def test_the_mongo_users_job_grants_each_user_readwrite_on_its_database_only(
    services: dict[str, Any],
) -> None:
    job = services["mongo-users"]
    assert job["depends_on"]["mongo"]["condition"] == "service_healthy"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in job["volumes"]}
    script_path = ROOT / "deploy" / "mongo" / "users.js"
    assert mounts["./deploy/mongo/users.js"] in " ".join(job["command"])
    for name in DB_USERS:
        variable = f"MONGO_{name.upper()}_PASSWORD"
        assert job["environment"][variable] == f"${{{variable}:?set {variable}}}"
    script = script_path.read_text()
    assert re.search(r"const services = \[(.*)\];", script).group(1) == ", ".join(
        f'"{n}"' for n in DB_USERS
    )
    # one role, readWrite, on the user's own database; nothing on admin or any other
    [roles] = re.findall(r"const roles = (\[.*\]);", script)
    assert roles == '[{ role: "readWrite", db: `holdspace_${service}` }]'
    assert "getSiblingDB(`holdspace_${service}`)" in script
    assert "process.env[variable]" in script and "quit(2)" in script  # no default password


def test_no_literal_password_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for url in re.findall(r"(?:amqp|mongodb)://[^\s]+", text):
        credentials = url.split("://", 1)[1].split("@", 1)
        if len(credentials) == 2 and ":" in credentials[0]:
            assert credentials[0].split(":", 1)[1].startswith("${"), url


def test_the_broker_loads_the_definitions_file_plus_the_services_user(
    services: dict[str, Any],
) -> None:
    assert DEFINITIONS.is_file()
    job = services["rabbitmq-definitions"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in job["volumes"]}
    source = mounts["./deploy/rabbitmq/definitions.json"]
    script = mounts["./deploy/docker/rabbitmq_definitions.py"]
    assert (ROOT / "deploy" / "docker" / "rabbitmq_definitions.py").is_file()
    assert job["command"][1:3] == [script, source]
    written = Path(job["command"][3])
    assert mounts["rabbitmq-definitions"] == str(written.parent)

    rabbitmq = services["rabbitmq"]
    assert rabbitmq["depends_on"]["rabbitmq-definitions"]["condition"] == (
        "service_completed_successfully"
    )
    broker_mounts = {v.split(":")[0]: v.split(":")[1] for v in rabbitmq["volumes"]}
    conf = ROOT / "deploy" / "docker" / "rabbitmq" / "holdspace.conf"
    assert broker_mounts["./deploy/docker/rabbitmq/holdspace.conf"].startswith(
        "/etc/rabbitmq/conf.d/"
    )
    [loaded] = re.findall(r"^load_definitions\s*=\s*(\S+)", conf.read_text(), re.M)
    assert loaded == f"{broker_mounts['rabbitmq-definitions']}/{written.name}"


def test_the_definitions_job_adds_a_user_whose_password_rabbitmq_accepts() -> None:
    spec = importlib.util.spec_from_file_location(
        "rabbitmq_definitions", ROOT / "deploy" / "docker" / "rabbitmq_definitions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    original = json.loads(DEFINITIONS.read_text())

    out = module.with_service_user(original, "holdspace", "s3cret-pass")

    assert out["queues"] == original["queues"]
    user = next(u for u in out["users"] if u["name"] == "holdspace")
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    raw = base64.b64decode(user["password_hash"])
    salt, digest = raw[:4], raw[4:]
    assert digest == hashlib.sha256(salt + b"s3cret-pass").digest()
    assert {"user": "holdspace", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in (
        out["permissions"]
    )
    assert "holdspace" not in {u["name"] for u in original["users"]}  # a copy


def _definitions_script():
    spec = importlib.util.spec_from_file_location(
        "rabbitmq_definitions", ROOT / "deploy" / "docker" / "rabbitmq_definitions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_definitions_job_adds_each_service_user_and_the_subscriber_only_when_asked() -> None:
    module = _definitions_script()
    original = json.loads(DEFINITIONS.read_text())
    assert original["users"] == []  # the file holds no user and no password
    passwords = {s: f"pw-{s}" for s in module.SERVICE_USERS}
    out = module.with_users(original, passwords, {})
    users = {u["name"]: u for u in out["users"]}
    assert set(users) == set(module.SERVICE_USERS)  # no subscriber: no password given
    for name, user in users.items():
        raw = base64.b64decode(user["password_hash"])
        assert raw[4:] == hashlib.sha256(raw[:4] + f"pw-{name}".encode()).digest()
        assert user["tags"] == ""
    assert {p["user"] for p in out["permissions"]} == set(module.SERVICE_USERS)
    assert "subscriber" not in {p["user"] for p in out["topic_permissions"]}
    # the service users keep exactly the file's (least-privilege) permissions
    assert [p for p in out["permissions"]] == [
        p for p in original["permissions"] if p["user"] in users
    ]
    with_subscriber = module.with_users(original, {**passwords, "subscriber": "x"}, {})
    assert "subscriber" in {u["name"] for u in with_subscriber["users"]}
    with pytest.raises(ValueError, match="RABBITMQ_PAYMENTS_PASSWORD"):
        module.with_users(original, {**passwords, "payments": ""}, {})


def test_the_definitions_job_takes_the_dead_letter_bounds_from_the_environment() -> None:
    module = _definitions_script()
    original = json.loads(DEFINITIONS.read_text())
    passwords = {s: "pw" for s in module.SERVICE_USERS}
    out = module.with_users(
        original, passwords, module._bounds({"DLQ_MAX_LENGTH": "500", "DLQ_TTL_S": "60"})
    )
    [policy] = out["policies"]
    assert policy["definition"]["max-length"] == 500
    assert policy["definition"]["message-ttl"] == 60_000
    assert original["policies"][0]["definition"]["max-length"] == 10_000  # a copy
    with pytest.raises(ValueError, match="DLQ_TTL_S"):
        module._bounds({"DLQ_TTL_S": "-1"})


def test_the_bounds_compose_passes_are_the_codes_defaults(services: dict[str, Any]) -> None:
    from shared.brokeraccess import DlqBoundSettings

    env = services["rabbitmq-definitions"]["environment"]
    for field, info in DlqBoundSettings.model_fields.items():
        assert default_of(env[field.upper()]) == str(info.default), field


def test_the_registration_service_sets_every_variable_its_settings_read(
    services: dict[str, Any],
) -> None:
    missing = env_names(RegistrationSettings) - set(services["registration"]["environment"])
    assert not missing, f"add to registration's environment: {sorted(missing)}"


@pytest.mark.parametrize("name", PORTS)
def test_each_service_sets_every_variable_its_settings_read(
    services: dict[str, Any], name: str
) -> None:
    wanted = {"SERVICE_NAME", "HTTP_PORT"}
    for cls in settings_classes(name):
        wanted |= env_names(cls)
    missing = wanted - set(services[name]["environment"])
    assert not missing, f"add to {name}'s environment: {sorted(missing)}"


@pytest.mark.parametrize("name", PORTS)
def test_defaults_in_compose_are_the_codes_defaults(services: dict[str, Any], name: str) -> None:
    fields = {}
    for cls in settings_classes(name):
        fields.update({field.upper(): info for field, info in cls.model_fields.items()})
    for var, value in services[name]["environment"].items():
        if var in NOT_THE_CODES_DEFAULT or var not in fields:
            continue
        if value is None or str(value).startswith(f"${{{var}:?"):
            continue  # passed through from the shell when set; required, no default
        default = default_of(str(value))
        literal = default if default is not None else str(value)
        info = fields[var]
        assert TypeAdapter(info.annotation).validate_python(literal) == info.default, (
            f"{name}: {var} is {value!r} in docker-compose.yml, the code's default is "
            f"{info.default!r}"
        )


@pytest.mark.parametrize("name", PORTS)
def test_production_mode_with_required_secrets(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    assert env["HOLDSPACE_ENV"] == "production"
    for secret in SECRETS:
        assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]+\}}", env[secret]), secret
    if name != "web":  # the pages use no broker
        password = f"RABBITMQ_{name.upper()}_PASSWORD"
        assert env["RABBITMQ_URL"].startswith(f"amqp://{name}:${{{password}:?set {password}}}@")
    assert "guest" not in env["RABBITMQ_URL"]
    assert env["HOLDSPACE_TOPOLOGY_PREFIX"] == "holdspace."  # what definitions.json names


def test_no_development_secret_is_in_the_file() -> None:
    from shared.settings import DEV_SECRETS

    text = COMPOSE.read_text()
    assert not [s for s in DEV_SECRETS if s in text]


def test_every_interpolation_is_well_formed() -> None:
    text = COMPOSE.read_text().replace("$$", "")  # $$ is a literal $ for the container
    for expression in INTERPOLATION.findall(text):
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*(:?[-?].*)?", expression), expression
    assert "$" not in INTERPOLATION.sub("", text), "a bare $ (write $$ for the container)"


@pytest.mark.parametrize("name", PORTS)
def test_services_start_after_rabbitmq_and_mongo_are_healthy(
    services: dict[str, Any], name: str
) -> None:
    depends = services[name]["depends_on"]
    assert depends["rabbitmq"]["condition"] == "service_healthy"
    assert depends["mongo"]["condition"] == "service_healthy"


def test_the_services_and_the_mail_sink_are_one_image_from_deploy_dockerfile(
    services: dict[str, Any],
) -> None:
    images = set()
    for name in [*PORTS, "mailsink", "rabbitmq-definitions"]:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(services[name]["image"])
    assert len(images) == 1
    mailsink = services["mailsink"]
    assert mailsink["command"][:3] == ["python", "-m", "shared.mailsink"]
    assert "1025" in healthcheck_text(mailsink)


def test_the_mail_sink_is_on_loopback_in_the_notifications_network(
    services: dict[str, Any],
) -> None:
    # Production mode allows SMTP without TLS only to a loopback host.
    mailsink, notifications = services["mailsink"], services["notifications"]
    assert mailsink["network_mode"] == "service:notifications"
    command = mailsink["command"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    env = notifications["environment"]
    assert env["SMTP_HOST"] == "${SMTP_HOST:-127.0.0.1}"
    assert env["SMTP_PORT"] == "${SMTP_PORT:-" + command[command.index("--port") + 1] + "}"
    assert mailsink.get("profiles", []) == notifications.get("profiles", [])


def test_the_dockerfile_builds_from_the_lock_and_runs_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert "requirements.lock" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    # Started without compose, the image still runs with production's checks.
    assert re.search(r"^ENV HOLDSPACE_ENV=production\s*$", text, re.M)
    # ... and binds what HTTP_HOST says (127.0.0.1 unless told), not a hard-coded 0.0.0.0.
    assert re.search(r'^CMD \["python", "-m", "registration"\]\s*$', text, re.M)
    assert "0.0.0.0" not in text


# --- the run command's Procfile (shared/devrun.py) -------------------------------


def fake_services(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "app.py").write_text("")
    (root / "consent").mkdir(exist_ok=True)  # a directory without app.py is no service
    return root


def test_the_procfile_lists_the_database_the_mail_sink_and_each_existing_service(
    tmp_path: Path,
) -> None:
    environ = {"EMBEDDED_MONGO_JAR": "/opt/em.jar", "MONGO_PORT": "27999", "VAR_DIR": "/tmp/v"}
    plan = devrun.build_plan(environ)
    processes = parse_procfile(plan.procfile()).processes
    existing = devrun.existing_services()
    assert "registration" in existing
    assert list(processes) == ["mongo", "mailsink", *existing, "ready"]

    # exec: honcho's signals go to the JVM itself, not to a shell in front of it.
    mongo = shlex.split(processes["mongo"])
    assert mongo[0] == "exec" and Path(mongo[1]).name == "java"
    assert mongo[mongo.index("-jar") + 1] == "/opt/em.jar"
    assert mongo[mongo.index("--store") + 1] == "/tmp/v/mongo/holdspace.journal"  # durable, in var/
    assert mongo[mongo.index("--host") + 1] == "127.0.0.1"
    assert mongo[mongo.index("--port") + 1] == "27999"
    assert any(word.startswith("-Xmx") for word in mongo)
    assert plan.env["MONGODB_URL"] == "mongodb://127.0.0.1:27999/"
    assert plan.ports()["mongo"] == 27999

    mailsink = shlex.split(processes["mailsink"])
    assert mailsink[mailsink.index("--port") + 1] == "1025"
    assert mailsink[mailsink.index("--dir") + 1] == "/tmp/v/mail"
    assert plan.env["SMTP_HOST"] == "127.0.0.1" and plan.env["SMTP_PORT"] == "1025"

    for name in existing:
        command = processes[name]
        wait, _, run = command.partition(" && ")
        assert "wait-port 127.0.0.1:27999" in wait  # no service before the database listens
        words = shlex.split(run)
        assert words[-2:] == ["-m", name]  # python -m <service>, as the image runs it
        assert f"HTTP_PORT={PORTS[name]}" in words and "HTTP_HOST=127.0.0.1" in words
    assert all(f"127.0.0.1:{PORTS[n]}/readyz" in processes["ready"] for n in existing)


def test_the_procfile_follows_the_services_that_exist(tmp_path: Path) -> None:
    services_dir = fake_services(tmp_path / "services", "registration", "payments")
    plan = devrun.build_plan(
        {"EMBEDDED_MONGO_JAR": "/opt/em.jar", "VAR_DIR": str(tmp_path / "var")},
        services_dir=services_dir,
    )
    processes = parse_procfile(plan.procfile()).processes
    assert list(processes) == ["mongo", "mailsink", "registration", "payments", "ready"]
    assert "HTTP_PORT=8003" in processes["payments"]
    assert plan.ports() == {
        "mailsink": 1025,
        "registration": 8001,
        "payments": 8003,
        "mongo": 27017,  # MongoDB's own: ops and the settings' default find it there
    }
    assert "--port 27017" in processes["mongo"]


def test_port_overrides_and_a_given_database(tmp_path: Path) -> None:
    services_dir = fake_services(tmp_path / "services", *PORTS)
    plan = devrun.build_plan(
        {
            "MONGODB_URL": "mongodb://db.example:27017/",
            "WEB_PORT": "18000",
            "REGISTRATION_PORT": "18001",
            "CONSENT_PORT": "18002",
            "PAYMENTS_PORT": "18003",
            "NOTIFICATIONS_PORT": "18004",
            "PROGRESS_PORT": "18005",
            "MAILSINK_PORT": "11025",
            "VAR_DIR": "relative/var",
        },
        services_dir=services_dir,
        repo_root=tmp_path,
    )
    processes = parse_procfile(plan.procfile()).processes
    assert "mongo" not in processes and "MONGODB_URL" not in plan.env
    assert plan.mongo_port is None and "mongo" not in plan.ports()
    for name, port in PORTS.items():
        assert f"HTTP_PORT=1{port}" in processes[name] and "wait-port" not in processes[name]
    assert "--port 11025" in processes["mailsink"] and plan.env["SMTP_PORT"] == "11025"
    # Links in messages open the pages; the pages call the APIs on their ports.
    assert plan.env["WEB_PUBLIC_URL"] == "http://127.0.0.1:18000"
    assert plan.env["COORDINATOR_CONSOLE_URL"] == "http://127.0.0.1:18000/console"
    assert plan.env["CONSENT_PUBLIC_URL"] == "http://127.0.0.1:18000"
    assert plan.env["REGISTRATION_API_URL"] == "http://127.0.0.1:18001"
    assert plan.env["NOTIFICATIONS_API_URL"] == "http://127.0.0.1:18004"
    assert plan.env["PROGRESS_API_URL"] == "http://127.0.0.1:18005"
    assert plan.mail_dir == tmp_path / "relative" / "var" / "mail"


def test_a_port_that_is_no_number_is_refused() -> None:
    with pytest.raises(SystemExit, match="REGISTRATION_PORT"):
        devrun.build_plan({"MONGODB_URL": "mongodb://x/", "REGISTRATION_PORT": "80o1"})


def test_a_busy_database_port_is_refused_with_the_variable_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        environ = {
            "EMBEDDED_MONGO_JAR": "/opt/em.jar",
            "MONGO_PORT": str(port),
            "VAR_DIR": str(tmp_path / "var"),
            "MAILSINK_PORT": str(devinfra.free_port()),
            **{devrun.port_variable(name): str(devinfra.free_port()) for name in PORTS},
        }
        assert devrun.up(environ) == 1  # refused before anything starts
    err = capsys.readouterr().err
    assert f"mongo port {port}" in err and "MONGO_PORT" in err
    assert not (tmp_path / "var").exists()


def test_the_run_says_it_is_development_and_ops_finds_that_in_up_env(tmp_path: Path) -> None:
    # The settings have no default environment: the run must name it, in every
    # process's environment and in up.env, where ops and the seeds read it.
    plan = devrun.build_plan({"MONGODB_URL": "mongodb://x/", "VAR_DIR": str(tmp_path)})
    assert plan.env["HOLDSPACE_ENV"] == "development"
    assert "HOLDSPACE_ENV=development\n" in plan.env_file()
    told = devrun.build_plan({"MONGODB_URL": "mongodb://x/", "HOLDSPACE_ENV": "production"})
    assert told.env["HOLDSPACE_ENV"] == "production"  # the shell's word wins


def test_the_banner_has_the_urls_and_the_hints(tmp_path: Path) -> None:
    local = devrun.build_plan({"EMBEDDED_MONGO_JAR": "/opt/em.jar", "VAR_DIR": str(tmp_path)})
    text = local.banner()
    assert f"embedded MongoDB (mongo-java-server) at {local.mongodb_url}" in text
    assert f"data in {tmp_path / 'mongo'}" in text
    assert "http://127.0.0.1:8001/docs" in text
    assert "http://127.0.0.1:15672/" in text
    assert str(tmp_path / "mail") in text
    assert ".venv/bin/ops token issue --role coordinator --all-programs" in text
    assert "registration.seed --url http://127.0.0.1:8001" in text

    remote = devrun.build_plan(
        {"MONGODB_URL": "mongodb://u:dbpw@db/", "RABBITMQ_URL": "amqp://u:mqpw@mq:5672/v"}
    ).banner()
    assert "dbpw" not in remote and "mqpw" not in remote
    assert "amqp://u:***@mq:5672/v" in remote


def test_prometheus_and_grafana_mount_the_monitoring_files(services: dict[str, Any]) -> None:
    for name, mounts in {
        "prometheus": ["deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml"],
        "grafana": ["deploy/grafana/provisioning", "deploy/grafana/dashboards"],
    }.items():
        service = services[name]
        assert "healthcheck" in service, name
        sources = [v.split(":")[0].removeprefix("./") for v in service["volumes"]]
        for path in mounts:
            assert path in sources, (name, path)
            assert (ROOT / path).exists(), path
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_the_image_holds_every_package_the_project_installs() -> None:
    # `pip install .` in the image fails on a package directory it was not given.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = set(project["tool"]["setuptools"]["package-dir"].values())
    dirs |= {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]} - set(
        project["tool"]["setuptools"]["package-dir"]
    )
    copied = [
        line.split()[1].rstrip("/")
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ")
    ]
    missing = [d for d in sorted(dirs) if not any(d == c or d.startswith(c + "/") for c in copied)]
    assert missing == []


def test_in_development_the_first_run_seeds_and_makes_a_demo_coordinator(tmp_path) -> None:
    base = {"EMBEDDED_MONGO_JAR": "/x.jar", "VAR_DIR": str(tmp_path)}
    ready = devrun.build_plan(base).processes["ready"]
    assert "--first-run" in ready and f"--consent-url http://127.0.0.1:{PORTS['consent']}" in ready
    for off in ({"SEED": "0"}, {"HOLDSPACE_ENV": "production"}):
        assert "--first-run" not in devrun.build_plan({**base, **off}).processes["ready"]

    assert f"--progress-url http://127.0.0.1:{PORTS['progress']}" in ready
    urls = firstrun.Urls("http://r", "http://c", "http://p", "http://g")
    (forms, what), (programs, _), (plans, _), (account, stdin) = (
        (cmd, s) for _, cmd, s in firstrun.steps(urls, "/venv/bin/python")
    )
    assert forms[-3:] == ["consent.seed", "--url", "http://c"]  # forms before programs
    assert programs[-5:] == ["registration.seed", "--url", "http://r", "--payments-url", "http://p"]
    assert plans[-5:] == ["progress.seed", "--url", "http://g", "--registration-url", "http://r"]
    assert account[0] == "/venv/bin/ops" and "--password-stdin" in account
    assert stdin == firstrun.DEMO_PASSWORD + "\n" and len(firstrun.DEMO_PASSWORD) >= 12
    assert what is None


def test_the_first_run_says_which_step_failed(capsys) -> None:
    urls = firstrun.Urls("http://127.0.0.1:9", "http://127.0.0.1:9", None)
    assert firstrun.first_run(urls, "http://web", python="/nonexistent/python") is False
    said = capsys.readouterr().out
    assert said.count("first run:") == 3 and "consent forms failed" in said
    assert "Sign in" not in said  # no account: no sign-in line
