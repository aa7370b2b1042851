"""The run command (scripts/up) for real: the embedded MongoDB, the mail sink, the services.

It runs against this session's RabbitMQ vhost (RABBITMQ_URL), starts its own
embedded MongoDB with its durable file store (MONGODB_URL unset) and puts every port
and its var/ directory where nothing else is. Then Ctrl-C, as a terminal sends it
(SIGINT to the foreground process group), must leave no process behind, and what was
written must be in var/mongo for the next run.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from honcho.environ import parse as parse_env_file
from honcho.environ import parse_procfile
from pymongo import MongoClient

from shared import devinfra, devrun, firstrun
from shared.mailsink import MailSink, message_files, read_messages

ROOT = Path(__file__).resolve().parents[2]
APPLICANT = "applicant-7f3e@example.org"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, timeout_s: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def send_mail(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "noreply@holdspace.example"
    message["To"] = APPLICANT
    message["Subject"] = subject
    message.set_content("Your seat is held.\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message, to_addrs=[APPLICANT, "bcc-7f3e@example.org"])


def test_the_mail_sink_saves_each_message_as_a_file(tmp_path: Path) -> None:
    with MailSink(tmp_path / "mail") as sink:
        send_mail(sink.port, "first")
        send_mail(sink.port, "second")
        first, second = sink.wait_for(2)
    assert [first["Subject"], second["Subject"]] == ["first", "second"]
    assert first["To"] == APPLICANT
    assert first["X-Envelope-To"] == f"<{APPLICANT}>, <bcc-7f3e@example.org>"
    assert first.get_content() == "Your seat is held.\n"
    names = [p.name for p in message_files(tmp_path / "mail")]
    assert names[0].endswith("-1.eml") and names[1].endswith("-2.eml")
    assert not listening(sink.port)


@dataclass
class Run:
    process: subprocess.Popen
    ports: dict[str, int]
    var_dir: Path
    log_path: Path
    started: set[int] = field(default_factory=set)

    @property
    def registration(self) -> str:
        return f"http://127.0.0.1:{self.ports['REGISTRATION_PORT']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return "\n".join(self.log().splitlines()[-60:])

    def wait_ready(self, timeout_s: float = 180) -> None:
        def registration_ready() -> bool:
            assert self.process.poll() is None, (
                f"scripts/up exited with {self.process.returncode}\n{self.log_tail()}"
            )
            return ready(self.registration)

        assert wait_until(registration_ready, timeout_s, 0.5), f"not ready\n{self.log_tail()}"
        self.started = descendants(self.process.pid)

    def mongo_port(self) -> int:
        env = parse_env_file((self.var_dir / "run" / "up.env").read_text())
        return int(env["MONGODB_URL"].rsplit(":", 1)[1].strip("/"))

    def stop_and_check_nothing_is_left(self, sig: signal.Signals, returncodes: set[int]) -> None:
        """Send ``sig`` to the process group, as a terminal does; 20 s for all to end."""
        ports = [self.mongo_port(), *self.ports.values()]
        os.killpg(self.process.pid, sig)
        deadline = time.monotonic() + 20
        self.process.wait(timeout=20)
        assert self.process.returncode in returncodes, self.log_tail()
        remaining = max(deadline - time.monotonic(), 0.1)
        assert wait_until(lambda: not any(alive(p) for p in self.started), remaining), (
            f"still running: {[cmdline(p) for p in self.started if alive(p)]}\n{self.log_tail()}"
        )
        for port in ports:
            assert not listening(port), f"port {port} still open\n{self.log_tail()}"


@contextmanager
def scripts_up(rabbitmq_url: str, tmp_path: Path) -> Iterator[Run]:
    """scripts/up on free ports, var/ in ``tmp_path``; whatever is left is killed after."""
    var_dir = tmp_path / "var"
    ports = {devrun.port_variable(name): devinfra.free_port() for name in devrun.DEFAULT_PORTS}
    ports["MAILSINK_PORT"] = devinfra.free_port()
    ports["MONGO_PORT"] = devinfra.free_port()
    run_id = uuid.uuid4().hex[:10]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MONGODB_URL", "MONGO_PORT", "VAR_DIR", *devrun.URLS_THAT_FOLLOW_PORTS}
    }
    env.update(
        {k: str(v) for k, v in ports.items()},
        RABBITMQ_URL=rabbitmq_url,
        VAR_DIR=str(var_dir),
        SKIP_BOOTSTRAP="1",  # this session's .venv is bootstrapped; no sync under its feet
        HOLDSPACE_ENV="development",
        HOLDSPACE_TOPOLOGY_PREFIX=f"t{run_id}.",
        HOLDSPACE_DB_PREFIX=f"t{run_id}_",
    )
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "up")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, like a shell's foreground job
        )
    run = Run(process, ports, var_dir, log_path)
    try:
        yield run
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for pid in run.started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_scripts_up_serves_the_services_saves_mail_and_stops_on_ctrl_c(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    with scripts_up(rabbitmq_url, tmp_path) as run:
        run.wait_ready()

        procfile = parse_procfile((run.var_dir / "run" / "Procfile").read_text()).processes
        assert {"mongo", "mailsink", "registration", "ready"} <= set(procfile)
        assert listening(run.mongo_port())
        store = run.var_dir / "mongo" / "holdspace.journal"
        # The JVM itself is the child (exec), so honcho's signals reach it.
        assert any(
            "holdspace-embedded-mongo.jar" in cmdline(pid) and str(store) in cmdline(pid)
            for pid in run.started
        ), "the embedded MongoDB is no child"
        assert store.is_file() and store.stat().st_size > 0  # the services' indexes, on disk
        for name in devrun.existing_services():  # each service that exists, on its port
            url = f"http://127.0.0.1:{run.ports[devrun.port_variable(name)]}"
            assert wait_until(lambda u=url: ready(u), 60, 0.5), f"{name}\n{run.log_tail()}"
            # The pages serve pages; each API its OpenAPI docs.
            page = "/crisis" if name == devrun.WEB else "/docs"
            assert httpx.get(f"{url}{page}", timeout=5).status_code == 200, name

        send_mail(run.ports["MAILSINK_PORT"], "Your seat")
        mail_dir = run.var_dir / "mail"
        assert wait_until(lambda: message_files(mail_dir), 10), run.log_tail()
        [message] = read_messages(mail_dir)
        assert message["Subject"] == "Your seat"
        assert wait_until(lambda: "message saved" in run.log(), 5), run.log_tail()
        # The ready step seeds the first-run data before it prints this: slow under load.
        assert wait_until(lambda: "Ctrl-C stops everything" in run.log(), 60), run.log_tail()
        web = f"http://127.0.0.1:{run.ports[devrun.port_variable(devrun.WEB)]}/"
        assert f"Holdspace is running: open {web}" in run.log()  # the pages, first
        assert "Database: embedded MongoDB (mongo-java-server) at mongodb://127.0.0.1:" in run.log()
        assert f"data in {run.var_dir / 'mongo'}" in run.log()

        # The first run seeds what a newcomer clicks through and says how to sign in.
        signed = f"Sign in at {web.rstrip('/')}/console as {firstrun.DEMO_EMAIL}"
        assert wait_until(lambda: signed in run.log(), 120, 0.5), run.log_tail()
        for step in ("consent forms", "programs and cohorts", "demo coordinator"):
            assert f"first run: {step} ready" in run.log()
        registration = f"http://127.0.0.1:{run.ports[devrun.port_variable('registration')]}"
        kinds = {c["kind"] for c in httpx.get(f"{registration}/cohorts", timeout=10).json()}
        assert kinds == {"recovery_group", "facilitator_session"}

        run.stop_and_check_nothing_is_left(signal.SIGINT, {0, 130})
        assert APPLICANT not in run.log() and "bcc-7f3e" not in run.log()  # no address logged


@pytest.mark.timeout(300)
def test_scripts_up_stops_everything_when_its_terminal_hangs_up(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    with scripts_up(rabbitmq_url, tmp_path) as run:
        run.wait_ready()
        url = f"mongodb://127.0.0.1:{run.mongo_port()}/"
        with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
            client["runcmd_marker"]["marks"].insert_one({"_id": "written before the hang-up"})
        run.stop_and_check_nothing_is_left(signal.SIGHUP, {128 + signal.SIGHUP})

    # The run's data is in var/mongo and outlives the run: the next one finds it there.
    server = devinfra.EmbeddedMongo(data_dir=run.var_dir / "mongo").start()
    try:
        with MongoClient(server.url, serverSelectionTimeoutMS=5000) as client:
            marks = client["runcmd_marker"]["marks"]
            assert marks.find_one({"_id": "written before the hang-up"}) is not None
    finally:
        server.stop()
