"""The system under test, started the way ``scripts/up`` starts it, on fresh names.

- RabbitMQ: the local broker (``scripts/ensure-rabbitmq``), a fresh vhost per run.
- The database: the embedded MongoDB as ``scripts/up`` runs it (mongo-java-server
  built by ``scripts/ensure-mongo``, the command of ``shared/devinfra.embedded_mongo_command``
  with the durable file store, every write journaled before it is acknowledged), its
  file in a fresh directory of the work dir. With MONGODB_URL set, that server is used
  instead.
- Database commands are counted by the services' own clients (``shared/mongo.py``
  counts every command in ``holdspace_db_commands_total{service,command}``) and read
  from each service's ``/metrics``: the same on any server.
- The mail sink and the four services: the commands of ``shared/devrun.build_plan``
  (``python -m <service>``, as ``scripts/up`` runs them), each in its own process group,
  on free ports, logs to files.

Only processes started here are ever stopped here, by their own process group.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from shared import devinfra, devrun
from shared.topology import SERVICES

MANAGEMENT_URL = os.environ.get("BENCH_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
MANAGEMENT_AUTH = aiohttp.BasicAuth("guest", "guest")
OPS_ROUTES = {"/metrics", "/healthz", "/readyz"}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    command: str
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)  # its own group: started by us
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def spawn(name: str, command: str, env: dict[str, str], log_dir: Path) -> Proc:
    """Run a shell command line (``exec ...``, so the PID is the program's) in its own group."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    popen = subprocess.Popen(
        ["bash", "-c", command],
        env=env,
        cwd=str(devinfra.REPO_ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return Proc(name, popen, log_path, command)


@dataclass
class System:
    """One isolated Holdspace: vhost, database, mail sink and the four services."""

    work_dir: Path
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    extra_env: dict[str, str] = field(default_factory=dict)
    vhost: str = ""
    mongodb_url: str = ""
    mongo: Proc | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    commands: dict[str, str] = field(default_factory=dict)
    mongo_heap: str | None = None

    @property
    def prefix(self) -> str:
        return f"bench{self.run_id}."

    @property
    def db_prefix(self) -> str:
        return f"bench{self.run_id}_"

    @property
    def rabbitmq_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{quote(self.vhost, safe='')}?heartbeat=15"

    def url(self, service: str) -> str:
        proc = self.procs[service]
        assert proc.url is not None
        return proc.url

    # --- infrastructure -------------------------------------------------------------

    def start_infra(self) -> None:
        """The broker's vhost and the database (the embedded MongoDB unless MONGODB_URL
        is set), started as ``scripts/up`` starts them."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        devinfra.ensure_local_rabbitmq()
        self.vhost = f"holdspace-bench-{self.run_id}"
        devinfra.create_vhost(self.vhost)
        if url := os.environ.get("MONGODB_URL"):
            self.mongodb_url = url
            return
        port, data_dir = devinfra.free_port(), self.work_dir / "mongo"
        data_dir.mkdir(parents=True, exist_ok=True)
        server = devinfra.EmbeddedMongo(data_dir=data_dir, port=port)
        command = devinfra.embedded_mongo_command(
            devinfra.embedded_mongo_jar(), store=server.store, port=port, heap=self.mongo_heap
        )
        line = "exec " + shlex.join(command)
        self.mongo = spawn("mongo", line, dict(os.environ), self.work_dir / "logs")
        self.commands["mongo"] = line
        deadline = time.monotonic() + 60
        while not port_open(port):
            if not self.mongo.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded MongoDB did not start:\n{self.mongo.log_tail()}")
            time.sleep(0.05)
        self.mongodb_url = server.url

    # --- services -------------------------------------------------------------------

    def start_services(self, timeout_s: float = 120.0) -> None:
        # The pages too: on their default port they would collide with a running scripts/up.
        ports = {s: devinfra.free_port() for s in (devrun.WEB, *SERVICES)}
        environ = {
            **{k: v for k, v in os.environ.items() if k not in ("VAR_DIR",)},
            "VAR_DIR": str(self.work_dir),
            "MONGODB_URL": self.mongodb_url,
            "RABBITMQ_URL": self.rabbitmq_url,
            "MAILSINK_PORT": str(devinfra.free_port()),
            **{devrun.port_variable(s): str(p) for s, p in ports.items()},
        }
        plan = devrun.build_plan(environ, python=sys.executable)
        self.env = {
            **environ,
            **plan.env,
            "HOLDSPACE_ENV": "development",
            "HOLDSPACE_TOPOLOGY_PREFIX": self.prefix,
            "HOLDSPACE_DB_PREFIX": self.db_prefix,
            "JWT_SECRET": self.jwt_secret,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            # Quiet hours would hold some messages back depending on the time of day.
            "QUIET_HOURS_START": "00:00",
            "QUIET_HOURS_END": "00:00",
            # The benchmark is the load; sign-up limits would measure themselves.
            "SIGNUP_LIMIT_PER_CLIENT": "",
            "SIGNUP_LIMIT_PER_COHORT": "",
            **self.extra_env,
        }
        (self.work_dir / "mail").mkdir(parents=True, exist_ok=True)
        for name, command in plan.processes.items():
            if name in ("ready", "mongo"):
                continue
            proc = spawn(name, command, self.env, self.work_dir / "logs")
            self.commands[name] = command
            if name in ports:
                proc.url = f"http://127.0.0.1:{ports[name]}"
            self.procs[name] = proc
        missing = [s for s in SERVICES if s not in self.procs]
        if missing:
            raise RuntimeError(f"services not found (services/<name>/app.py): {missing}")
        wait_ready([p for p in self.procs.values() if p.url], timeout_s)

    def pids(self) -> dict[str, int]:
        out = {name: p.pid for name, p in self.procs.items() if p.alive()}
        if self.mongo is not None and self.mongo.alive():
            out["mongo"] = self.mongo.pid
        return out

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()
        if self.mongo is not None:
            self.mongo.stop()
            self.mongo = None
        if self.vhost:
            try:
                devinfra.delete_vhost(self.vhost)
            except Exception:  # noqa: BLE001 - best effort; the name is unique
                pass
            self.vhost = ""
        shutil.rmtree(self.work_dir / "mongo", ignore_errors=True)

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if not p.alive()]

    # --- what the running system says -------------------------------------------------

    async def service_counters(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """The counters every service exports, summed per (service, metric, label)."""
        out: dict[str, float] = {}
        for name in SERVICES:
            async with session.get(f"{self.url(name)}/metrics") as r:
                text = await r.text()
            for key, value in summarize_metrics(text).items():
                out[f"{name}|{key}"] = value
        return out

    async def db_commands(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        """Database commands the services sent, by name (insert, update, findAndModify,
        delete, find, getMore...), summed over every service; None when no service
        counts them (``holdspace_db_commands_total`` missing from every ``/metrics``)."""
        return await self._db_commands(session, ("command",), by_service=False)

    async def db_commands_by_place(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        """Database commands by "service command collection": where they are spent."""
        return await self._db_commands(session, ("command", "collection"), by_service=True)

    async def _db_commands(
        self, session: aiohttp.ClientSession, labels: tuple[str, ...], *, by_service: bool
    ) -> dict[str, float] | None:
        out: dict[str, float] | None = None
        for name in SERVICES:
            async with session.get(f"{self.url(name)}/metrics") as r:
                counted = db_commands_from_metrics(await r.text(), labels)
            if counted is not None:
                out = {} if out is None else out
                for key, value in counted.items():
                    key = f"{name} {key}" if by_service else key
                    out[key] = out.get(key, 0.0) + value
        return out

    async def queues(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """Every queue of this run's vhost (management API; its figures lag up to 5 s)."""
        url = f"{MANAGEMENT_URL}/api/queues/{quote(self.vhost, safe='')}"
        params = {"columns": "name,messages,messages_ready,messages_unacknowledged,consumers"}
        async with session.get(url, params=params, auth=MANAGEMENT_AUTH) as r:
            r.raise_for_status()
            return await r.json()

    async def outbox_pending(self, session: aiohttp.ClientSession) -> float:
        """Work the queues do not show: events not yet published, and messages being
        sent after the event that caused them was acknowledged."""
        total = 0.0
        for name in SERVICES:
            async with session.get(f"{self.url(name)}/metrics") as r:
                text = await r.text()
            for family in text_string_to_metric_families(text):
                if family.name in PENDING_WORK:
                    total += sum(s.value for s in family.samples)
        return total


PENDING_WORK = ("holdspace_outbox_pending_events", "holdspace_deliveries_sending")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_ready(procs: list[Proc], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    waiting = list(procs)
    while waiting and time.monotonic() < deadline:
        for proc in list(waiting):
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
            try:
                if httpx.get(f"{proc.url}/readyz", timeout=2).status_code == 200:
                    waiting.remove(proc)
            except httpx.HTTPError:
                pass
        if waiting:
            time.sleep(0.2)
    if waiting:
        names = ", ".join(p.name for p in waiting)
        raise TimeoutError(f"not ready after {timeout_s:.0f} s: {names}")


def summarize_metrics(text: str) -> dict[str, float]:
    """The counters a cost is counted from, from one service's /metrics text.

    Keys: ``http`` (requests but the operations routes), ``http|<route>``,
    ``db_writes``, ``published``, ``consumed`` (every outcome), ``consumed|<outcome>``,
    ``retried``, ``dead_lettered``, ``publish_failures``.
    """
    out: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_total"):
                continue
            match s.name:
                case "holdspace_http_requests_total":
                    route = s.labels.get("route", "")
                    if route not in OPS_ROUTES:
                        add("http", s.value)
                        add(f"http|{s.labels.get('method', '')} {route}", s.value)
                case "holdspace_db_writes_total":
                    add("db_writes", s.value)
                case "holdspace_events_published_total":
                    add("published", s.value)
                case "holdspace_events_consumed_total":
                    add("consumed", s.value)
                    add(f"consumed|{s.labels.get('outcome', '')}", s.value)
                case "holdspace_events_retried_total":
                    add("retried", s.value)
                case "holdspace_events_dead_lettered_total":
                    add("dead_lettered", s.value)
                case "holdspace_publish_failures_total":
                    add("publish_failures", s.value)
    return out


def db_commands_from_metrics(
    text: str, labels: tuple[str, ...] = ("command",)
) -> dict[str, float] | None:
    """``holdspace_db_commands_total`` of one service's /metrics, summed by the given
    labels (joined by a space); None when the service does not export it."""
    out: dict[str, float] | None = None
    for family in text_string_to_metric_families(text):
        if family.name != "holdspace_db_commands":
            continue
        out = {} if out is None else out
        for s in family.samples:
            if s.name == "holdspace_db_commands_total":
                key = " ".join(s.labels.get(label, "") for label in labels)
                out[key] = out.get(key, 0.0) + s.value
    return out


def totals(counters: dict[str, float], key: str) -> float:
    """Sum of one key over every service (``<service>|<key>``)."""
    return sum(v for k, v in counters.items() if k.split("|", 1)[1] == key)


async def wait_drained(
    system: System,
    session: aiohttp.ClientSession,
    *,
    timeout_s: float,
    since: float,
    samples: list[tuple[float, int]] | None = None,
    stable_s: float = 6.0,
) -> tuple[bool, float | None, list[dict[str, Any]]]:
    """Wait until every queue of the vhost and every outbox is empty, no message is being
    sent (the work PENDING_WORK counts), and it stays so.

    Dead-letter queues (``*.dlq``) are not waited for: what lands there stays until an
    operator acts. Count them with :func:`dead_letters` (work lost to the pipeline).
    Returns (drained, seconds after ``since`` when first seen empty, last queue list).
    Queue figures come from the management API, whose statistics are refreshed every
    5 s: empty counts only when every reading for ``stable_s`` says so.
    """
    deadline = time.monotonic() + timeout_s
    empty_since: float | None = None
    last: list[dict[str, Any]] = []
    while True:
        now = time.monotonic()
        try:
            last = await system.queues(session)
            depth = sum(int(q.get("messages") or 0) for q in last if not is_dlq(q))
            pending = await system.outbox_pending(session)
        except (aiohttp.ClientError, OSError, TimeoutError):
            # The broker or a service briefly unreachable (a restart): not drained yet.
            depth, pending = -1, -1.0
        if samples is not None:
            samples.append((now - since, depth))
        if depth == 0 and pending == 0:
            if empty_since is None:
                empty_since = now
            elif now - empty_since >= stable_s:
                return True, empty_since - since, last
        else:
            empty_since = None
        if now >= deadline:
            return False, None, last
        await asyncio.sleep(0.5)


def is_dlq(queue: dict[str, Any]) -> bool:
    return str(queue.get("name", "")).endswith(".dlq")


def dead_letters(queues: list[dict[str, Any]]) -> int:
    """Messages in the services' dead-letter queues."""
    return sum(int(q.get("messages") or 0) for q in queues if is_dlq(q))
