"""deploy/kubernetes/ (a kustomize base) is valid Kubernetes, agrees with the code, and
keeps what running past one machine needs.

No kustomize and no cluster are needed: the test resolves kustomization.yaml itself
(its resources and its configMapGenerator files, the only fields it allows), validates
every object against Kubernetes' own JSON schemas (kubernetes-validate, strict: an
unknown field fails) for one fixed version, and checks what matters on top: several
replicas of every service, probes on the paths the code serves, resource requests,
a disruption budget for every workload, secrets only from the Secret and only under
keys it defines, every setting the settings classes read given to each service (and
the whole environment accepted by those classes in production), a three-node RabbitMQ
cluster of quorum queues and a three-member MongoDB replica set. When kubectl is on
the PATH, its `kubectl kustomize` builds the same objects.

The expected environment comes from the settings classes, not from a list here: a
setting added to the code and not to the manifests fails.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_settings import BaseSettings

from shared.settings import DEV_SECRETS, ServiceSettings, env_names

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = KDIR / "kustomization.yaml"
COMPOSE = ROOT / "docker-compose.yml"
# The oldest Kubernetes these manifests are meant for: a field added later fails here.
KUBERNETES_VERSION = "1.30.0"
IMAGE = "holdspace"  # the name an overlay's `images:` gives a registry and tag
SECRET = "holdspace-secrets"
PLACEHOLDER = "REPLACE_ME"
# The fields of kustomization.yaml this test resolves; any other (a patch, a
# transformer) would make what it checks differ from what kustomize builds.
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}
# Copies kept inside the base (kustomize reads no file outside it) and their originals.
COPIES = {
    "rabbitmq/definitions.json": "deploy/rabbitmq/definitions.json",
    "rabbitmq/rabbitmq_definitions.py": "deploy/docker/rabbitmq_definitions.py",
    "mongo/users.js": "deploy/mongo/users.js",
}
DEFINITIONS_SCRIPT = "rabbitmq/rabbitmq_definitions.py"
# Variables a service container has besides its settings: the passwords its URLs are
# composed from, and uvicorn's own proxy setting.
NOT_SETTINGS = {"BROKER_PASSWORD", "DATABASE_PASSWORD", "FORWARDED_ALLOW_IPS"}
# A variable of this name holds a secret: only a secretKeyRef may give it.
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|COOKIE|_KEY|_KEYS|WEBHOOK_URL)$")
PUBLIC_KEY = re.compile(r"PUBLIC_KEY$")
# ConfigMap values set to something other than the code's default on purpose.
NOT_THE_CODES_DEFAULT = {
    "HOLDSPACE_ENV",
    "RABBITMQ_MANAGEMENT_URL",
    "LOG_FORMAT",
    "HTTP_HOST",
    "ENCRYPTION_KEY_ID",
    "PUBLIC_BASE_URL",
    "TRUSTED_PROXIES",
    "CONSENT_PUBLIC_URL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_TLS",
    "COORDINATOR_EMAILS",
    "WEB_PUBLIC_URL",
    "COORDINATOR_CONSOLE_URL",
    "REGISTRATION_API_URL",
    "CONSENT_API_URL",
    "PAYMENTS_API_URL",
    "NOTIFICATIONS_API_URL",
    "PROGRESS_API_URL",
}
# What production refuses to take from the code's defaults, in every service: the
# derivation below must find at least these (else it derives nothing).
ALWAYS_REQUIRED = {"HOLDSPACE_ENV", "RABBITMQ_URL", "JWT_SECRET", "ENCRYPTION_KEY"}
VARIABLE_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Object = dict[str, Any]


# --- the base, as kustomize would build it ---------------------------------------


@functools.cache
def kustomization() -> Object:
    return yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))


@functools.cache
def listed_files() -> tuple[str, ...]:
    k = kustomization()
    files = list(k.get("resources", []))
    for generator in k.get("configMapGenerator", []):
        files += [entry.rpartition("=")[2] for entry in generator.get("files", [])]
    return tuple(files)


def generated_config_map(generator: Object) -> Object:
    """What configMapGenerator makes of ``files``: one key per file, its name."""
    data = {}
    for entry in generator["files"]:
        key, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
        data[key or Path(path).name] = (KDIR / path).read_text(encoding="utf-8")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
    }


@functools.cache
def objects() -> tuple[tuple[str, Object], ...]:
    """(where it comes from, object) for everything the base holds."""
    out: list[tuple[str, Object]] = []
    for resource in kustomization()["resources"]:
        for doc in yaml.safe_load_all((KDIR / resource).read_text(encoding="utf-8")):
            if doc is not None:
                out.append((resource, doc))
    for generator in kustomization().get("configMapGenerator", []):
        out.append(("configMapGenerator", generated_config_map(generator)))
    return tuple(out)


def all_of(kind: str) -> list[Object]:
    return [o for _, o in objects() if o["kind"] == kind]


def one(kind: str, name: str) -> Object:
    found = [o for o in all_of(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads() -> list[Object]:
    return [o for _, o in objects() if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod_spec(workload: Object) -> Object:
    return workload["spec"]["template"]["spec"]


def containers(workload: Object, *, init: bool = True) -> list[Object]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def secret_keys() -> dict[str, str]:
    secret = one("Secret", SECRET)
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def config_map_data(name: str) -> dict[str, str]:
    return one("ConfigMap", name)["data"]


# --- the code's side --------------------------------------------------------------


def services() -> list[str]:
    """Every process `python -m <name>` serves: a package under services/ with settings."""
    return sorted(
        p.parent.name
        for p in (ROOT / "services").glob("*/__main__.py")
        if (p.parent / "settings.py").is_file()
    )


@functools.cache
def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"{service}.settings")
    [cls] = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ServiceSettings)
        and obj.__module__ == module.__name__
    ]
    return cls


def port_of(service: str) -> int:
    return settings_class(service).model_fields["http_port"].default


@functools.cache
def from_given_values_only(cls: type[BaseSettings]) -> type[BaseSettings]:
    """``cls`` reading only what it is given: no environment, no .env file."""

    class Isolated(cls):  # type: ignore[valid-type, misc]
        @classmethod
        def settings_customise_sources(cls_, settings_cls, init_settings, *_: Any, **__: Any):
            return (init_settings,)

    Isolated.__name__ = cls.__name__
    return Isolated


def settings_from(cls: type[BaseSettings], env: dict[str, str]) -> BaseSettings:
    given = {f: env[f.upper()] for f in cls.model_fields if f.upper() in env}
    return from_given_values_only(cls)(**given)


@functools.cache
def development_secrets() -> frozenset[str]:
    """Every known development secret: shared/settings.py's and each service's own
    (``DEV_..._KEY``, ``DEV_..._SECRET``, ``..._DEV_SECRETS``), but words too short to be one."""
    found = set(DEV_SECRETS)
    for service in services():
        module = importlib.import_module(f"{service}.settings")
        for name, value in vars(module).items():
            if not name.startswith("DEV_") and "_DEV_" not in name:
                continue
            if isinstance(value, str) and re.search("SECRET|KEY", name):
                found.add(value)
            if isinstance(value, set | frozenset) and name.endswith("SECRETS"):
                found |= {v for v in value if len(v) >= 16}
    return frozenset(found)


# --- a container's environment, as the kubelet would give it ----------------------


def fake_secret(key: str, placeholder: str) -> str:
    """A value the code accepts where the Secret holds a placeholder (empty: unused)."""
    if not placeholder:
        return ""
    digest = hashlib.sha256(key.encode()).digest()
    if key in {"ENCRYPTION_KEY", "BLIND_INDEX_KEY", "CONSENT_CHAIN_KEY"}:
        return base64.b64encode(digest).decode()  # 32 bytes
    if key == "WECHATPAY_APIV3_KEY":
        return digest.hex()[:32]
    return digest.hex()[:48]  # URL-safe, like openssl rand -hex 24


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a variable defined before, else left as written."""
    return VARIABLE_REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def environment(container: Object) -> tuple[dict[str, str], dict[str, str]]:
    """(name -> value, name -> where from) of a container; secrets replaced by fakes."""
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    fakes = {k: fake_secret(k, v) for k, v in secret_keys().items()}
    for entry in container.get("envFrom", []):
        if "configMapRef" in entry:
            for key, value in config_map_data(entry["configMapRef"]["name"]).items():
                values[key], sources[key] = value, "configmap"
        else:
            assert entry["secretRef"]["name"] == SECRET, entry
            for key in fakes:
                values[key], sources[key] = fakes[key], "secret"
    for var in container.get("env", []):
        name, source = var["name"], var.get("valueFrom", {})
        if "value" in var:
            values[name], sources[name] = expand(var["value"], values), "literal"
        elif "secretKeyRef" in source:
            values[name], sources[name] = fakes[source["secretKeyRef"]["key"]], "secret"
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[name], sources[name] = config_map_data(ref["name"])[ref["key"]], "configmap"
        else:
            values[name], sources[name] = f"<{name}>", "field"
    return values, sources


def service_container(service: str) -> Object:
    [container] = containers(one("Deployment", service), init=False)
    return container


def port_number(container: Object, port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- the directory and the kustomization -------------------------------------------


def test_every_file_in_the_directory_is_listed_in_the_kustomization() -> None:
    listed = set(listed_files())
    present = {
        p.relative_to(KDIR).as_posix()
        for p in KDIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    orphans = present - listed - {"kustomization.yaml", "README.md"}
    assert not orphans, f"list in kustomization.yaml, or delete: {sorted(orphans)}"
    missing = listed - present
    assert not missing, f"listed in kustomization.yaml but absent: {sorted(missing)}"


def test_the_kustomization_has_only_what_this_test_resolves() -> None:
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    assert set(k) <= KUSTOMIZATION_FIELDS, sorted(set(k) - KUSTOMIZATION_FIELDS)
    # The namespace is kustomize's to set: one place, and the one object that names it.
    assert one("Namespace", k["namespace"])
    for _, o in objects():
        assert "namespace" not in o["metadata"], f"{o['kind']}/{o['metadata']['name']}"
    for binding in all_of("RoleBinding"):
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount":
                assert subject["namespace"] == k["namespace"]
                assert one("ServiceAccount", subject["name"])


def test_the_copies_are_the_files_docker_compose_uses() -> None:
    for copy_path, original in COPIES.items():
        assert (KDIR / copy_path).read_bytes() == (ROOT / original).read_bytes(), (
            f"deploy/kubernetes/{copy_path} differs from {original}: cp {original} "
            f"deploy/kubernetes/{copy_path}"
        )


def test_each_object_is_named_once() -> None:
    ids = [(o["kind"], o["metadata"]["name"]) for _, o in objects()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize(
    "where,obj",
    objects(),
    ids=[f"{w}:{o['kind']}/{o['metadata']['name']}" for w, o in objects()],
)
def test_each_object_is_valid_kubernetes(where: str, obj: Object) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# A cross-check only: the tests above resolve the kustomization themselves and validate
# every object without kubectl. The repo does not install kubectl (no cluster is used
# here), so on a machine without it this one is skipped; where it is, it must agree.
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_same_objects() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(KDIR)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    generated = {g["name"] for g in kustomization().get("configMapGenerator", [])}

    def name(o: Object) -> str:  # a generated ConfigMap's name carries a content hash
        n = o["metadata"]["name"]
        base = n.rsplit("-", 1)[0]
        return base if o["kind"] == "ConfigMap" and base in generated else n

    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert sorted((d["kind"], name(d)) for d in docs) == sorted(
        (o["kind"], o["metadata"]["name"]) for _, o in objects()
    )


# --- the services: replicas, probes, resources, security -------------------------


def test_every_service_is_deployed() -> None:
    deployed = {d["metadata"]["name"] for d in all_of("Deployment")}
    assert deployed == set(services())
    assert "web" in deployed  # the pages are a process of their own


@pytest.mark.parametrize("service", services())
def test_each_service_runs_several_replicas_of_its_own_process(service: str) -> None:
    deployment = one("Deployment", service)
    assert deployment["spec"]["replicas"] >= 2
    container = service_container(service)
    assert container["image"] == IMAGE
    # The address is the settings' alone (shared/serve.py): no --host or --port.
    assert container["command"] == ["python", "-m", service]
    env, _ = environment(container)
    assert env["SERVICE_NAME"] == service
    assert int(env["HTTP_PORT"]) == port_of(service) == port_number(container, "http")
    assert env["HTTP_HOST"] == "0.0.0.0"  # the code's default, loopback, no probe reaches


@pytest.mark.parametrize("service", services())
def test_each_service_is_probed_where_the_code_answers(service: str) -> None:
    app = ROOT / ("services/web/app.py" if service == "web" else "shared/app.py")
    source = app.read_text(encoding="utf-8")
    for path in ("/healthz", "/readyz"):
        served = re.search(rf'@app\.get\(\s*"{path}"', source)
        assert served, f"{app} no longer serves {path}"
    container = service_container(service)
    expected = {
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert port_number(container, http["port"]) == port_of(service), probe
    # A stop lets the endpoints drop the pod, then uvicorn's graceful shutdown (10 s) and
    # the consumers' and relay's drains.
    assert pod_spec(one("Deployment", service))["terminationGracePeriodSeconds"] >= 30


def test_every_container_has_requests_and_a_memory_limit() -> None:
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where


def test_every_pod_runs_unprivileged_on_a_read_only_root() -> None:
    namespace = one("Namespace", kustomization()["namespace"])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in workloads():
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context.get("runAsUser", 1) != 0, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        # No {SERVICE}_PORT=tcp://... variables beside the code's and the images' own.
        assert spec["enableServiceLinks"] is False, name
        for container in containers(workload):
            security = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert not security.get("privileged"), where


def test_a_disruption_budget_covers_each_long_running_workload() -> None:
    budgets = all_of("PodDisruptionBudget")
    for workload in all_of("Deployment") + all_of("StatefulSet"):
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        [budget] = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        replicas = workload["spec"]["replicas"]
        spec = budget["spec"]
        kept = spec["minAvailable"] if "minAvailable" in spec else replicas - spec["maxUnavailable"]
        assert 1 <= kept < replicas, f"{name}: a drain must be possible, never all at once"
        if workload["kind"] == "StatefulSet":  # a quorum: keep the majority
            assert kept >= replicas // 2 + 1, name


def test_every_service_object_selects_pods_and_their_ports() -> None:
    templates = [w["spec"]["template"] for w in all_of("Deployment") + all_of("StatefulSet")]
    for service in all_of("Service"):
        name = service["metadata"]["name"]
        matched = [
            t for t in templates if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert matched, f"Service {name} selects no pods"
        ports = {p["name"] for t in matched for c in t["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: {port['targetPort']}"
    for statefulset in all_of("StatefulSet"):
        headless = one("Service", statefulset["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        # Members find each other by name before they are ready.
        assert headless["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("service", [s for s in services() if s != "web"])
def test_the_pages_reach_each_service_at_its_service_object(service: str) -> None:
    env, _ = environment(service_container("web"))
    url = urlsplit(env[f"{service.upper()}_API_URL"])
    assert url.scheme == "http" and url.path in ("", "/")
    assert url.port == port_of(service)
    target = one("Service", url.hostname)
    assert [p["port"] for p in target["spec"]["ports"]] == [port_of(service)]
    assert selects(
        target["spec"]["selector"],
        one("Deployment", service)["spec"]["template"]["metadata"]["labels"],
    )


def test_the_ingress_serves_the_pages_and_the_payment_webhooks() -> None:
    [ingress] = all_of("Ingress")
    env, _ = environment(service_container("web"))
    host = urlsplit(env["WEB_PUBLIC_URL"]).hostname
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == host and host in ingress["spec"]["tls"][0]["hosts"]
    backends = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert backends["/"]["name"] == "web" and backends["/webhooks/"]["name"] == "payments"
    source = (ROOT / "services/payments/webhooks.py").read_text(encoding="utf-8")
    assert re.findall(r'"(/webhooks/)[a-z]+"', source), "payments serves its webhooks elsewhere"
    for backend in backends.values():
        ports = [p["name"] for p in one("Service", backend["name"])["spec"]["ports"]]
        assert backend["port"]["name"] in ports


# --- settings and secrets ---------------------------------------------------------


@pytest.mark.parametrize("service", services())
def test_each_service_gets_every_setting_its_code_reads(service: str) -> None:
    _, sources = environment(service_container(service))
    wanted = env_names(settings_class(service))
    missing = wanted - set(sources)
    assert not missing, f"give {service}: {sorted(missing)}"
    unknown = set(sources) - wanted - NOT_SETTINGS
    assert not unknown, f"{service} reads no {sorted(unknown)} (a typo?)"


@pytest.mark.parametrize("service", services())
def test_each_service_starts_in_production_with_this_environment(service: str) -> None:
    env, _ = environment(service_container(service))
    settings = settings_from(settings_class(service), env)
    assert settings.is_production
    assert settings.database_name == f"holdspace_{service}"


@pytest.mark.parametrize("service", services())
def test_what_production_requires_is_given_and_secrets_come_from_the_secret(
    service: str,
) -> None:
    cls = settings_class(service)
    env, sources = environment(service_container(service))
    # Required: a setting whose code default production refuses, all else as given.
    required = set()
    for name in env_names(cls):
        try:
            settings_from(cls, {k: v for k, v in env.items() if k != name})
        except ValidationError:
            required.add(name)
    assert ALWAYS_REQUIRED <= required, sorted(ALWAYS_REQUIRED - required)
    for field, info in cls.model_fields.items():
        if info.default in development_secrets():
            assert field.upper() in required, field
    for name in required:
        assert name in sources, name
        if SECRET_NAME.search(name) and not PUBLIC_KEY.search(name):
            assert sources[name] == "secret", f"{service}: {name} must come from {SECRET}"


def test_secrets_come_only_from_the_secret_and_urls_carry_no_password() -> None:
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            _, sources = environment(container)
            for name, source in sources.items():
                if SECRET_NAME.search(name) and not PUBLIC_KEY.search(name):
                    assert source == "secret", f"{where}: {name} from a {source}"
            for var in container.get("env", []):
                for user_info in re.findall(r"://([^@/\s]+)@", var.get("value", "")):
                    password = user_info.partition(":")[2]
                    ref = VARIABLE_REFERENCE.fullmatch(password)
                    assert ref and sources[ref.group(1)] == "secret", f"{where}: {var['name']}"
    for config_map in all_of("ConfigMap"):
        for key, value in config_map["data"].items():
            assert not SECRET_NAME.search(key) or PUBLIC_KEY.search(key), key
            assert not re.search(r"://[^@/\s]+:[^@/\s]+@", value), key


def test_every_reference_names_an_object_and_a_key_that_exist() -> None:
    keys = secret_keys()
    for workload in workloads():
        spec = pod_spec(workload)
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for var in container.get("env", []):
                source = var.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["name"] == SECRET and ref["key"] in keys, f"{where}: {ref}"
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in config_map_data(ref["name"]), f"{where}: {ref}"
            for entry in container.get("envFrom", []):
                ref = entry.get("configMapRef") or entry.get("secretRef")
                assert any(o["metadata"]["name"] == ref["name"] for _, o in objects()), where
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            claims = {
                c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])
            }
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, f"{where}: {mount}"
                volume = volumes.get(mount["name"], {})
                if "configMap" in volume and "subPath" in mount:
                    assert mount["subPath"] in config_map_data(volume["configMap"]["name"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == SECRET
                for item in volume["secret"].get("items", []):
                    assert item["key"] in keys, item
            if "configMap" in volume:
                config_map_data(volume["configMap"]["name"])  # exists


def test_every_variable_reference_is_to_a_variable_defined_before() -> None:
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            values, _ = environment(container)
            for var in container.get("env", []):
                unresolved = VARIABLE_REFERENCE.findall(values[var["name"]])
                assert not unresolved, f"{where}: {var['name']} uses undefined {unresolved}"
            # The kubelet expands $(VAR) in commands too: the scripts use ${VAR} only.
            for word in container.get("command", []) + container.get("args", []):
                assert not VARIABLE_REFERENCE.search(word), f"{where}: {word!r}"


def test_the_secret_holds_placeholders_only_and_the_readme_names_each() -> None:
    readme = (KDIR / "README.md").read_text(encoding="utf-8")
    for key, value in secret_keys().items():
        assert value in ("", PLACEHOLDER), f"{key}: a real value in git?"
        assert f"`{key}`" in readme, f"README.md: say what {key} is"
    known = development_secrets()
    for path in KDIR.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not [s for s in known if s in text], path


@pytest.mark.parametrize("service", services())
def test_config_map_values_are_the_codes_defaults_unless_set_on_purpose(service: str) -> None:
    fields = {f.upper(): info for f, info in settings_class(service).model_fields.items()}
    container = service_container(service)
    effective: dict[str, str] = {}
    for entry in container["envFrom"]:  # a later source's key wins, as in Kubernetes
        effective.update(config_map_data(entry["configMapRef"]["name"]))
    for var, value in effective.items():
        fixed = var in ("SERVICE_NAME", "HTTP_PORT")
        if var in NOT_THE_CODES_DEFAULT or var not in fields or fixed:
            continue
        info = fields[var]
        if value == "" and info.default is None:
            continue  # empty: not set
        assert TypeAdapter(info.annotation).validate_python(value) == info.default, (
            f"{service}: {var} is {value!r} in config.yaml, the code's default is "
            f"{info.default!r} (or add it to NOT_THE_CODES_DEFAULT)"
        )


def test_the_public_addresses_agree() -> None:
    web, _ = environment(service_container("web"))
    base = web["WEB_PUBLIC_URL"]
    assert base.startswith("https://")
    notifications, _ = environment(service_container("notifications"))
    assert notifications["WEB_PUBLIC_URL"] == base
    assert notifications["COORDINATOR_CONSOLE_URL"] == f"{base}/console"
    consent, _ = environment(service_container("consent"))
    assert consent["CONSENT_PUBLIC_URL"] == base  # the pages' /consents/<token> signs
    for service in services():
        env, _ = environment(service_container(service))
        assert env["PUBLIC_BASE_URL"] == base


def test_nothing_runs_the_development_mail_sink() -> None:
    for workload in workloads():
        for container in containers(workload):
            words = " ".join(container.get("command", []) + container.get("args", []))
            assert "mailsink" not in words, workload["metadata"]["name"]


# --- RabbitMQ: three nodes, quorum queues -----------------------------------------


def rabbitmq_conf() -> dict[str, str]:
    text = config_map_data("rabbitmq-config")["rabbitmq.conf"]
    pairs = [
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {k.strip(): v.strip() for k, v in pairs}


def test_rabbitmq_is_a_three_node_cluster_found_through_kubernetes() -> None:
    statefulset = one("StatefulSet", "rabbitmq")
    assert statefulset["spec"]["replicas"] == 3
    [broker] = containers(statefulset, init=False)
    assert broker["image"] == yaml.safe_load(COMPOSE.read_text())["services"]["rabbitmq"]["image"]
    env, _ = environment(broker)
    headless = statefulset["spec"]["serviceName"]
    assert env["K8S_SERVICE_NAME"] == headless
    assert env["RABBITMQ_USE_LONGNAME"] == "true"
    # A node's name is its stable DNS name, which the plugin derives from the endpoints.
    assert env["RABBITMQ_NODENAME"] == f"rabbit@<MY_POD_NAME>{env['K8S_HOSTNAME_SUFFIX']}"
    plugins = config_map_data("rabbitmq-config")["enabled_plugins"]
    assert "rabbitmq_peer_discovery_k8s" in plugins
    conf = rabbitmq_conf()
    assert conf["cluster_formation.peer_discovery_backend"] in ("rabbit_peer_discovery_k8s", "k8s")
    assert conf["cluster_formation.k8s.address_type"] == "hostname"
    assert conf["cluster_partition_handling"] == "pause_minority"
    # The plugin lists the headless Service's endpoints with the pod's service account.
    account = pod_spec(statefulset)["serviceAccountName"]
    [binding] = [
        b for b in all_of("RoleBinding") if any(s["name"] == account for s in b["subjects"])
    ]
    role = one("Role", binding["roleRef"]["name"])
    assert any("endpoints" in r["resources"] and "get" in r["verbs"] for r in role["rules"])


def test_every_queue_is_a_quorum_queue_grown_to_every_node() -> None:
    definitions = json.loads(config_map_data("rabbitmq-definitions")["definitions.json"])
    assert definitions["queues"]
    for queue in definitions["queues"]:
        assert queue["arguments"].get("x-queue-type") == "quorum", queue["name"]
    conf = rabbitmq_conf()
    replicas = one("StatefulSet", "rabbitmq")["spec"]["replicas"]
    # Imported by the first node alone, a quorum queue would have one member: the queues
    # wait for every node, and grow back to every node after one was replaced.
    assert int(conf["cluster_formation.target_cluster_size_hint"]) == replicas
    assert conf["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
    assert (
        int(conf["quorum_queue.continuous_membership_reconciliation.target_group_size"]) == replicas
    )


def test_the_broker_loads_the_definitions_with_a_user_for_each_service() -> None:
    statefulset = one("StatefulSet", "rabbitmq")
    init = next(c for c in containers(statefulset) if c["image"] == IMAGE)
    [broker] = containers(statefulset, init=False)
    source_mount = next(m for m in init["volumeMounts"] if m["name"] == "definitions-source")
    script, source, written = init["command"][1:]
    assert Path(script).parent.as_posix() == source_mount["mountPath"]
    assert Path(source).parent.as_posix() == source_mount["mountPath"]
    volumes = {v["name"]: v for v in pod_spec(statefulset)["volumes"]}
    assert volumes["definitions-source"]["configMap"]["name"] == "rabbitmq-definitions"
    assert {Path(script).name, Path(source).name} == set(config_map_data("rabbitmq-definitions"))
    # The broker reads the written file from the same volume.
    [written_mount] = [
        m for m in init["volumeMounts"] if Path(written).parent.as_posix() == m["mountPath"]
    ]
    [read_mount] = [m for m in broker["volumeMounts"] if m["name"] == written_mount["name"]]
    assert rabbitmq_conf()["load_definitions"] == f"{read_mount['mountPath']}/{Path(written).name}"
    spec = importlib.util.spec_from_file_location(
        "k8s_rabbitmq_definitions", KDIR / DEFINITIONS_SCRIPT
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, sources = environment(init)
    for user in module.SERVICE_USERS:
        assert sources[module.password_variable(user)] == "secret", user
    assert sources["RABBITMQ_PASSWORD"] == "secret"  # the operator's user


@pytest.mark.parametrize("service", services())
def test_each_service_connects_to_the_broker_as_its_own_user(service: str) -> None:
    raw = next(v["value"] for v in service_container(service)["env"] if v["name"] == "RABBITMQ_URL")
    url = urlsplit(raw)
    assert url.username == service and url.password == "$(BROKER_PASSWORD)"
    ref = next(v for v in service_container(service)["env"] if v["name"] == "BROKER_PASSWORD")
    assert ref["valueFrom"]["secretKeyRef"]["key"] == f"RABBITMQ_{service.upper()}_PASSWORD"
    client = one("Service", url.hostname)
    assert url.port in [p["port"] for p in client["spec"]["ports"]]
    assert selects(
        client["spec"]["selector"],
        one("StatefulSet", "rabbitmq")["spec"]["template"]["metadata"]["labels"],
    )
    assert parse_qs(url.query)["heartbeat"]


def test_the_retry_settings_are_the_queues_the_definitions_declare() -> None:
    # The services may not declare: their retry delays must be the broker's queues.
    env = config_map_data("holdspace-common")
    settings = ServiceSettings.model_construct(
        max_attempts=int(env["MAX_ATTEMPTS"]),
        retry_base_ms=int(env["RETRY_BASE_MS"]),
        retry_max_ms=int(env["RETRY_MAX_MS"]),
    )
    delays = settings.retry_delays_ms()
    definitions = json.loads(config_map_data("rabbitmq-definitions")["definitions.json"])
    names = {q["name"] for q in definitions["queues"]}
    prefix = env["HOLDSPACE_TOPOLOGY_PREFIX"]
    for service in services():
        if service == "web":
            continue  # it consumes nothing
        retries = {n for n in names if n.startswith(f"{prefix}{service}.retry.")}
        assert retries == {f"{prefix}{service}.retry.{ms}ms" for ms in delays}, service


# --- MongoDB: a three-member replica set ------------------------------------------


def members() -> list[str]:
    statefulset = one("StatefulSet", "mongo")
    name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
    [container] = containers(statefulset, init=False)
    [port] = [p["containerPort"] for p in container["ports"]]
    return [f"{name}-{i}.{service}:{port}" for i in range(statefulset["spec"]["replicas"])]


def test_mongodb_is_a_three_member_replica_set_with_authentication() -> None:
    statefulset = one("StatefulSet", "mongo")
    assert statefulset["spec"]["replicas"] == 3
    [mongod] = containers(statefulset, init=False)
    assert mongod["image"] == yaml.safe_load(COMPOSE.read_text())["services"]["mongo"]["image"]
    start = " ".join(mongod["command"] + mongod["args"])
    assert re.search(r"mongod --replSet rs0\b", start)
    assert "--keyFile /etc/mongo-key/keyfile" in start
    # Only the first member creates the administrator; the others start empty.
    assert 'if [ "${HOSTNAME##*-}" != 0 ]' in start and "unset MONGO_INITDB_ROOT_USERNAME" in start
    script = config_map_data("mongo-scripts")["replicaset.js"]
    assert re.search(r'rs\.initiate\(\{ _id: "rs0"', script)
    assert re.findall(r'host: "([^"]+)"', script) == members()


@pytest.mark.parametrize("service", services())
def test_each_service_connects_to_the_replica_set_as_its_own_user(service: str) -> None:
    raw = next(v["value"] for v in service_container(service)["env"] if v["name"] == "MONGODB_URL")
    match = re.fullmatch(r"mongodb://([^:]+):(\$\(\w+\))@([^/]+)/([^?]+)\?(.*)", raw)
    assert match, raw
    user, password, hosts, database, query = match.groups()
    assert user == service and password == "$(DATABASE_PASSWORD)"
    ref = next(v for v in service_container(service)["env"] if v["name"] == "DATABASE_PASSWORD")
    assert ref["valueFrom"]["secretKeyRef"]["key"] == f"MONGO_{service.upper()}_PASSWORD"
    assert hosts.split(",") == members()
    assert database == f"holdspace_{service}"
    assert parse_qs(query) == {"replicaSet": ["rs0"], "authSource": [database]}


def test_the_init_job_initiates_the_set_and_makes_each_services_user() -> None:
    job = one("Job", "mongo-init")
    [container] = containers(job)
    script = " ".join(container["args"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "scripts")
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["scripts"]["configMap"]["name"] == "mongo-scripts"
    # First the set (on mongo-0 directly), then the users (on the set's primary).
    first, then = f"{mount['mountPath']}/replicaset.js", f"{mount['mountPath']}/users.js"
    assert first in script and then in script and script.index(first) < script.index(then)
    assert "replicaSet=rs0" in script and members()[0] in script
    users = config_map_data("mongo-scripts")["users.js"]
    listed = re.search(r"const services = \[(.*)\];", users).group(1)
    assert set(re.findall(r'"(\w+)"', listed)) == set(services())
    _, sources = environment(container)
    for service in services():
        assert sources[f"MONGO_{service.upper()}_PASSWORD"] == "secret", service
    assert sources["MONGO_ROOT_PASSWORD"] == "secret"
    # The same administrator mongo-0 creates.
    [mongod] = containers(one("StatefulSet", "mongo"), init=False)
    env, _ = environment(mongod)
    values, _ = environment(container)
    assert values["MONGO_ROOT_USER"] == env["MONGO_INITDB_ROOT_USERNAME"]
    assert job["spec"].get("ttlSecondsAfterFinished")  # so that the next apply runs it again
