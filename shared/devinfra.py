"""Local infrastructure for development and tests: the embedded MongoDB, the local broker.

Used by the run command (``scripts/up``) and the test fixtures. Nothing here is
used in production, where RABBITMQ_URL and MONGODB_URL point at real servers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


def embedded_mongo_jar() -> str:
    """The embedded database's launcher, built on first use by scripts/ensure-mongo."""
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "ensure-mongo")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


# The data lives in the JVM's heap (the journal only keeps it), about 480 MB per
# 100,000 small documents: capped, a test that leaks data fails with an error
# instead of eating the machine.
DEFAULT_HEAP = "1g"


def embedded_mongo_command(
    jar: str, *, store: str, port: int, port_file: Path | None = None, heap: str | None = None
) -> list[str]:
    """The command that runs the embedded database; ``store`` is ``memory`` or a file."""
    heap = heap or os.environ.get("EMBEDDED_MONGO_HEAP") or DEFAULT_HEAP
    command = [
        shutil.which("java") or "java",
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",  # two cores: no parallel GC threads competing with the services
        "-jar",
        jar,
        "--store",
        store,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if port_file is not None:
        command += ["--port-file", str(port_file)]
    return command


@dataclass
class EmbeddedMongo:
    """mongo-java-server on a loopback port: in memory, or durable in ``data_dir``.

    ``data_dir`` None means the memory store (tests); otherwise the data lives in
    ``data_dir/holdspace.journal`` and every acknowledged write survives kill -9.
    """

    data_dir: Path | None = None
    log_dir: Path | None = None
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def store(self) -> str:
        return "memory" if self.data_dir is None else str(self.data_dir / "holdspace.journal")

    def start(self, timeout_s: float = 60.0) -> EmbeddedMongo:
        log_dir = self.log_dir or self.data_dir
        if log_dir is None:
            raise ValueError("an in-memory server needs a log_dir")
        log_dir.mkdir(parents=True, exist_ok=True)
        port_file = log_dir / "embedded-mongo.port"
        port_file.unlink(missing_ok=True)
        command = embedded_mongo_command(
            embedded_mongo_jar(), store=self.store, port=self.port, port_file=port_file
        )
        with open(log_dir / "embedded-mongo.log", "ab") as log:  # the child keeps its own
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded MongoDB exited: see {log_dir}/embedded-mongo.log")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the embedded MongoDB did not start in {timeout_s}s")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: what a crash does; the data file is left as the crash left it."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run(
        [exe, "-q", *args], check=True, capture_output=True, text=True, timeout=timeout
    )


def ensure_local_rabbitmq(timeout_s: float = 240) -> None:
    """Bounded, so a broker that never answers fails a run instead of stalling it."""
    subprocess.run([str(REPO_ROOT / "scripts" / "ensure-rabbitmq")], check=True, timeout=timeout_s)


def create_vhost(name: str, user: str = "guest") -> None:
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


def docker_available() -> bool:
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env().ping()
        return True
    except Exception:
        return False
