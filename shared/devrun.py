"""The run command's process list and supervisor (``scripts/up`` ends in ``devrun up``).

:func:`build_plan` turns the environment into a Procfile: ``mongo``, the embedded
MongoDB (mongo-java-server with its durable file store; not when MONGODB_URL is set),
the mail sink, one process per service that exists (``services/<name>/app.py``) and
``ready``, which prints the URLs once every service answers ``/readyz`` (in development,
after seeding what a newcomer clicks through: shared/firstrun.py). honcho runs
it: output is multiplexed with a name per line, and when one process ends (or on
Ctrl-C / SIGTERM) honcho sends SIGTERM to every process group and SIGKILL to whatever
is left after :data:`KILL_WAIT` s. Every command starts with ``exec`` (the services
after waiting for the database's port), so those signals reach the program itself.

Environment read here (all optional)::

    VAR_DIR              where the database's file, mail and the run files go (var/)
    WEB_PORT             8000 (the pages)
    REGISTRATION_PORT    8001   CONSENT_PORT 8002   PAYMENTS_PORT 8003
    NOTIFICATIONS_PORT   8004   PROGRESS_PORT 8005   MAILSINK_PORT 1025
    MONGO_PORT           the embedded MongoDB's port: 27017, MongoDB's own, so that
                         ops and any MongoDB tool find it with their defaults
    EMBEDDED_MONGO_JAR   its launcher (else scripts/ensure-mongo's answer)
    EMBEDDED_MONGO_HEAP  its Java heap (-Xmx; 1g when unset)
    MONGODB_URL          a database to use instead of starting the embedded one
    RABBITMQ_URL         a broker to use instead of the local one
    HOLDSPACE_ENV        development unless set (written to up.env, as ops reads it)

The embedded MongoDB keeps its data in memory and in ``$VAR_DIR/mongo/holdspace.journal``:
every write is appended to the journal before it is acknowledged and the journal is
replayed at start, so what a service was told is written survives Ctrl-C, a crash or
kill -9 of the database.

The generated Procfile and the variables added to every process are written to
``$VAR_DIR/run/Procfile`` and ``$VAR_DIR/run/up.env``, so that
``honcho start -f var/run/Procfile -e var/run/up.env -d .`` runs the same thing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import honcho.manager
from honcho.manager import Manager
from honcho.printer import Message, Printer

from shared import devinfra, firstrun
from shared.topology import SERVICES

REPO_ROOT = devinfra.REPO_ROOT
SERVICES_DIR = REPO_ROOT / "services"
DEFAULT_PORTS = {
    "web": 8000,
    "registration": 8001,
    "consent": 8002,
    "payments": 8003,
    "notifications": 8004,
    "progress": 8005,
}
WEB = "web"  # the pages: a client of the services' APIs, started like them
MAILSINK_PORT = 1025
MONGO_PORT = 27017
LOCAL_MANAGEMENT_URL = "http://127.0.0.1:15672/"
# Settings naming a URL of this run (links in messages, the APIs the pages call): they
# follow the port of the process that serves it, plus a path.
URLS_THAT_FOLLOW_PORTS = {
    "WEB_PUBLIC_URL": ("web", ""),
    "PUBLIC_BASE_URL": ("web", ""),
    "COORDINATOR_CONSOLE_URL": ("web", "/console"),
    "CONSENT_PUBLIC_URL": ("web", ""),  # the signing link opens the page at /consents/<token>
    "REGISTRATION_API_URL": ("registration", ""),
    "CONSENT_API_URL": ("consent", ""),
    "PAYMENTS_API_URL": ("payments", ""),
    "NOTIFICATIONS_API_URL": ("notifications", ""),
    "PROGRESS_API_URL": ("progress", ""),
    # Where `ops` finds each service of this run (it reads var/run/up.env).
    "REGISTRATION_URL": ("registration", ""),
    "CONSENT_URL": ("consent", ""),
    "PAYMENTS_URL": ("payments", ""),
    "NOTIFICATIONS_URL": ("notifications", ""),
    "PROGRESS_URL": ("progress", ""),
}
READY_TIMEOUT_S = 120
DB_WAIT_S = 60
# Seconds between the first process ending and SIGKILL for the rest (honcho's is 5):
# a service's graceful shutdown (uvicorn's own limit is 10 s) should not be cut short.
KILL_WAIT = 15


def port_variable(service: str) -> str:
    return f"{service.upper()}_PORT"


def existing_services(services_dir: Path = SERVICES_DIR) -> list[str]:
    """The services that exist (``services/<name>/app.py``): the pages, then the services in
    topology order."""
    return [s for s in (WEB, *SERVICES) if (Path(services_dir) / s / "app.py").is_file()]


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"up: {name}={raw!r} is not a port number")
    return int(raw)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


@dataclass(frozen=True)
class ServiceProc:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Plan:
    """Everything the run command starts, decided before anything starts."""

    var_dir: Path
    mail_dir: Path
    mailsink_port: int
    services: list[ServiceProc]
    mongodb_url: str
    mongo_port: int | None  # None: MONGODB_URL was given
    rabbitmq_url: str | None  # None: the local broker (scripts/ensure-rabbitmq)
    processes: dict[str, str] = field(default_factory=dict)  # name -> shell command
    env: dict[str, str] = field(default_factory=dict)  # added to every process

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def mongo_dir(self) -> Path:
        return self.var_dir / "mongo"

    def procfile(self) -> str:
        lines = [
            "# Generated by scripts/up (shared/devrun.py) for this run; not to be edited.",
            *(f"{name}: {command}" for name, command in self.processes.items()),
        ]
        return "\n".join(lines) + "\n"

    def env_file(self) -> str:
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in self.env.items())

    def ports(self) -> dict[str, int]:
        """Every port this run listens on, by process name."""
        ports = {"mailsink": self.mailsink_port, **{s.name: s.port for s in self.services}}
        if self.mongo_port is not None:
            ports["mongo"] = self.mongo_port
        return ports

    def banner(self) -> str:
        apis = [s for s in self.services if s.name != WEB]
        width = max(len(s.name) for s in apis) if apis else 0
        lines = []
        web = next((s for s in self.services if s.name == WEB), None)
        if web is not None:
            db = "" if self.mongo_port in (None, MONGO_PORT) else f"MONGODB_URL={self.mongodb_url} "
            lines += [
                f"Holdspace is running: open {web.url}/",
                f"Coordinator console:  {web.url}/console (an account:"
                f" {db}.venv/bin/ops web add-coordinator EMAIL --name NAME)",
            ]
        lines.append("API docs:")
        lines += [f"  {s.name:<{width}}  {s.url}/docs" for s in apis]
        if self.rabbitmq_url is None:
            lines.append(f"RabbitMQ management: {LOCAL_MANAGEMENT_URL} (guest / guest)")
        else:
            lines.append(f"RabbitMQ: {redact_url(self.rabbitmq_url)} (RABBITMQ_URL)")
        if self.mongo_port is not None:
            lines.append(
                f"Database: embedded MongoDB (mongo-java-server) at {self.mongodb_url},"
                f" data in {self.mongo_dir}"
            )
        else:
            lines.append(f"Database: {redact_url(self.mongodb_url)} (MONGODB_URL)")
        lines.append(
            f"Mail: SMTP sink on 127.0.0.1:{self.mailsink_port}, messages in {self.mail_dir}"
        )
        registration = next((s for s in self.services if s.name == "registration"), None)
        lines.append(
            "A coordinator token:  "
            "TOKEN=$(.venv/bin/ops token issue --role coordinator --all-programs)"
        )
        consent = next((s for s in self.services if s.name == "consent"), None)
        payments = next((s for s in self.services if s.name == "payments"), None)
        if registration is not None:
            lines.append(
                "Sample data:          .venv/bin/python -m registration.seed"
                f" --url {registration.url}"
                + (f" --payments-url {payments.url}" if payments is not None else " --no-budgets")
            )
        if consent is not None:
            lines.append(
                f"Consent forms:        .venv/bin/python -m consent.seed --url {consent.url}"
            )
        lines.append("Ctrl-C stops everything.")
        return "\n".join(lines)


def _first_run_args(environ: Mapping[str, str], services: list[ServiceProc]) -> str:
    """In development (and unless SEED=0), the ready step seeds what a newcomer clicks
    through and makes a demo coordinator (shared/firstrun.py)."""
    development = (environ.get("HOLDSPACE_ENV") or "development").strip() == "development"
    urls = {s.name: s.url for s in services}
    if not development or environ.get("SEED", "1") == "0":
        return ""
    if "registration" not in urls or "consent" not in urls:
        return ""
    args = f" --first-run --registration-url {urls['registration']} --consent-url {urls['consent']}"
    if "payments" in urls:
        args += f" --payments-url {urls['payments']}"
    if "progress" in urls:
        args += f" --progress-url {urls['progress']}"
    if WEB in urls:
        args += f" --web-url {urls[WEB]}"
    return args


def build_plan(
    environ: Mapping[str, str],
    *,
    services_dir: Path = SERVICES_DIR,
    python: str = sys.executable,
    repo_root: Path = REPO_ROOT,
) -> Plan:
    """Decide ports, URLs and commands from ``environ``; starts nothing.

    Needs EMBEDDED_MONGO_JAR in ``environ`` or runs scripts/ensure-mongo (which may
    build the embedded MongoDB) when MONGODB_URL is not set.
    """
    var_dir = Path(environ.get("VAR_DIR") or repo_root / "var")
    if not var_dir.is_absolute():
        var_dir = repo_root / var_dir
    mail_dir = var_dir / "mail"
    mailsink_port = _port(environ, "MAILSINK_PORT", MAILSINK_PORT)
    services = [
        ServiceProc(name, _port(environ, port_variable(name), DEFAULT_PORTS[name]))
        for name in existing_services(services_dir)
    ]
    py = shlex.quote(python)

    processes: dict[str, str] = {}
    env: dict[str, str] = {}
    wait_db = ""
    mongodb_url = (environ.get("MONGODB_URL") or "").strip()
    mongo_port: int | None = None
    if not mongodb_url:
        mongo_port = _port(environ, "MONGO_PORT", MONGO_PORT)
        server = devinfra.EmbeddedMongo(data_dir=var_dir / "mongo", port=mongo_port)
        jar = environ.get("EMBEDDED_MONGO_JAR") or devinfra.embedded_mongo_jar()
        command = devinfra.embedded_mongo_command(
            jar, store=server.store, port=mongo_port, heap=environ.get("EMBEDDED_MONGO_HEAP")
        )
        # exec: honcho's SIGTERM (and its SIGKILL after KILL_WAIT) reach the JVM itself.
        processes["mongo"] = "exec " + shlex.join(command)
        mongodb_url = server.url
        env["MONGODB_URL"] = mongodb_url
        wait_db = (
            f"{py} -m shared.devrun wait-port 127.0.0.1:{mongo_port} --timeout {DB_WAIT_S} && "
        )

    processes["mailsink"] = (
        f"exec {py} -m shared.mailsink --host 127.0.0.1 --port {mailsink_port}"
        f" --dir {shlex.quote(str(mail_dir))}"
    )
    traces = var_dir / "traces"
    for service in services:
        # Each service's spans in a file of its own (shared/tracing.py), unless told otherwise.
        trace_file = (
            "" if environ.get("TRACE_FILE") else f" TRACE_FILE={traces}/{service.name}.jsonl"
        )
        processes[service.name] = (
            f"{wait_db}exec env HTTP_HOST=127.0.0.1 HTTP_PORT={service.port}{trace_file}"
            f" {py} -m {service.name}"
        )
    ready_urls = " ".join(f"{s.url}/readyz" for s in services)
    processes["ready"] = (
        f"exec {py} -m shared.devrun ready --timeout {READY_TIMEOUT_S}"
        f" --banner {shlex.quote(str(var_dir / 'run' / 'banner.txt'))}"
        f"{_first_run_args(environ, services)} {ready_urls}".rstrip()
    )

    # The development system, said explicitly (the settings have no default); a
    # shell's own HOLDSPACE_ENV wins, and production then refuses the dev secrets.
    env["HOLDSPACE_ENV"] = (environ.get("HOLDSPACE_ENV") or "").strip() or "development"
    env["SMTP_HOST"] = "127.0.0.1"
    env["SMTP_PORT"] = str(mailsink_port)
    env["PYTHONUNBUFFERED"] = "1"  # honcho reads a pipe: no block buffering
    if not environ.get("LOG_FORMAT"):
        env["LOG_FORMAT"] = "console"  # "auto" would choose JSON for the pipe
    by_name = {s.name: s for s in services}
    for variable, (service, path) in URLS_THAT_FOLLOW_PORTS.items():
        if service in by_name and not environ.get(variable):
            env[variable] = by_name[service].url + path

    return Plan(
        var_dir=var_dir,
        mail_dir=mail_dir,
        mailsink_port=mailsink_port,
        services=services,
        mongodb_url=mongodb_url,
        mongo_port=mongo_port,
        rabbitmq_url=(environ.get("RABBITMQ_URL") or "").strip() or None,
        processes=processes,
        env=env,
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class _HangupManager(Manager):
    """honcho's Manager, plus: a hang-up (the terminal closed) stops everything too.

    Without this, SIGHUP kills this process and honcho's per-process helpers but not
    the processes themselves, which run in their own sessions: the database and the
    services would be left holding their ports.
    """

    def _start(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the helpers forked here inherit it
        super()._start()
        signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum: int, frame: object) -> None:
        self._system_print("SIGHUP received\n")
        self.returncode = 128 + signal.SIGHUP
        self.terminate()


class _QuietOnClosedOutput(Printer):
    """Drops what a closed terminal cannot take, instead of failing mid-shutdown."""

    def write(self, message: Message) -> None:
        try:
            super().write(message)
        except OSError:
            pass


def up(environ: Mapping[str, str] | None = None) -> int:
    """Start everything in the plan under honcho; returns honcho's exit code."""
    environ = dict(os.environ if environ is None else environ)
    plan = build_plan(environ)
    busy = [f"{name} port {port}" for name, port in plan.ports().items() if port_in_use(port)]
    if busy:
        variables = [port_variable(s.name) for s in plan.services]
        variables += ["MAILSINK_PORT", "MONGO_PORT"]
        print(
            f"up: already in use: {', '.join(busy)}. Another scripts/up running?"
            f" Other ports: set {', '.join(variables)}.",
            file=sys.stderr,
        )
        return 1
    if not plan.services:
        print("up: no service found (services/<name>/app.py)", file=sys.stderr)
    for directory in (plan.run_dir, plan.mail_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if plan.mongo_port is not None:
        plan.mongo_dir.mkdir(parents=True, exist_ok=True)
    if plan.rabbitmq_url is None:
        bound_dead_letters(environ)
    (plan.run_dir / "Procfile").write_text(plan.procfile())
    (plan.run_dir / "up.env").write_text(plan.env_file())
    (plan.run_dir / "banner.txt").write_text(plan.banner() + "\n")
    starting = ", ".join(f"{name} :{port}" for name, port in plan.ports().items())
    print(f"up: starting {starting} (Procfile: {plan.run_dir / 'Procfile'})", flush=True)

    honcho.manager.KILL_WAIT = KILL_WAIT
    manager = _HangupManager(printer=_QuietOnClosedOutput(sys.stdout))
    process_env = {**environ, **plan.env}
    for name, command in plan.processes.items():
        manager.add_process(name, command, env=dict(process_env), cwd=str(REPO_ROOT))
    manager.loop()
    return manager.returncode if manager.returncode is not None else 0


def bound_dead_letters(environ: Mapping[str, str]) -> None:
    """The deployment's DLQ bounds policy on the local broker's vhost ``/`` (rabbitmqctl),
    so a development run keeps dead letters as production does (DLQ_MAX_LENGTH, DLQ_TTL_S)."""
    from shared.brokeraccess import DlqBoundSettings, apply_dlq_bounds

    prefix = environ.get("HOLDSPACE_TOPOLOGY_PREFIX") or "holdspace."
    try:
        apply_dlq_bounds("/", prefix, DlqBoundSettings())
    except Exception as exc:  # no rabbitmqctl rights here: the run works, unbounded
        print(f"up: could not set the dead-letter bounds policy ({exc})", file=sys.stderr)


def wait_port(target: str, timeout_s: float) -> int:
    host, _, port = target.rpartition(":")
    try:
        devinfra.wait_for_port(int(port), timeout_s, host=host or "127.0.0.1")
    except TimeoutError as exc:
        print(f"wait-port: {exc}", file=sys.stderr)
        return 1
    return 0


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ready(
    urls: list[str],
    banner: Path | None,
    timeout_s: float,
    first: tuple[firstrun.Urls, str | None] | None = None,
) -> None:
    """Wait for every /readyz, print the banner (after the first run's seeding, when
    ``first`` asks for it), then wait for honcho's SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + timeout_s
    waiting = list(urls)
    while waiting and time.monotonic() < deadline:
        waiting = [u for u in waiting if not _ready(u)]
        if waiting:
            time.sleep(0.5)
    if waiting:
        names = ", ".join(u.removesuffix("/readyz") for u in waiting)
        print(f"not ready after {timeout_s:.0f} s: {names} (see the lines above)", flush=True)
    elif urls:
        print("all services ready", flush=True)
        if first is not None:
            firstrun.first_run(*first)
    if banner is not None and banner.exists():
        print(banner.read_text(), end="", flush=True)
    while True:  # honcho stops everything when any process ends: this one must not
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.devrun")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run everything (what scripts/up does after bootstrapping)")
    commands.add_parser("procfile", help="print the Procfile `up` would run")
    p_wait = commands.add_parser("wait-port", help="wait until HOST:PORT accepts connections")
    p_wait.add_argument("target")
    p_wait.add_argument("--timeout", type=float, default=DB_WAIT_S)
    p_ready = commands.add_parser("ready", help="wait for URLs to answer 200, print a banner")
    p_ready.add_argument("urls", nargs="*")
    p_ready.add_argument("--banner", type=Path)
    p_ready.add_argument("--timeout", type=float, default=READY_TIMEOUT_S)
    p_ready.add_argument("--first-run", action="store_true", help="seed, add a demo account")
    for name in ("registration", "consent", "payments", "progress", "web"):
        p_ready.add_argument(f"--{name}-url")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up()
    if args.command == "procfile":
        print(build_plan(os.environ).procfile(), end="")
        return 0
    if args.command == "wait-port":
        return wait_port(args.target, args.timeout)
    first = None
    if args.first_run:
        urls = firstrun.Urls(
            args.registration_url, args.consent_url, args.payments_url, args.progress_url
        )
        first = (urls, args.web_url)
    ready(args.urls, args.banner, args.timeout, first)
    return 0


if __name__ == "__main__":
    sys.exit(main())
