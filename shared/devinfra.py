"""Local infrastructure for development and tests: a FerretDB server, the local broker.

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


def ferretdb_binary() -> str:
    """The pinned FerretDB build, built on first use by scripts/ensure-ferretdb."""
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "ensure-ferretdb")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def ferretdb_command(binary: str, data_dir: Path, port: int) -> list[str]:
    return [
        binary,
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir}/",
        f"--state-dir={data_dir}",
        f"--listen-addr=127.0.0.1:{port}",
        "--debug-addr=-",
        "--telemetry=disable",
        "--log-level=warn",
    ]


@dataclass
class FerretDB:
    """A FerretDB server with its SQLite files in ``data_dir``, on a free loopback port."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> FerretDB:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = open(self.data_dir / "ferretdb.log", "ab")
        self.process = subprocess.Popen(
            ferretdb_command(ferretdb_binary(), self.data_dir, self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FERRETDB_TELEMETRY": "disable", "DO_NOT_TRACK": "1"},
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run(
        [exe, "-q", *args], check=True, capture_output=True, text=True, timeout=timeout
    )


def ensure_local_rabbitmq() -> None:
    subprocess.run([str(REPO_ROOT / "scripts" / "ensure-rabbitmq")], check=True)


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
