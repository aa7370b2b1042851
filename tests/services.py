"""Run Holdspace services as real processes (uvicorn) for integration and e2e tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared import devinfra
from shared.security import ALL_PROGRAMS, FieldCipher, Role, decode_key, issue_token
from shared.settings import DEV_ENCRYPTION_KEY
from shared.tokens import Programs

TEST_JWT_SECRET = "test-only-jwt-secret-0123456789abcdef-0123456789"
# What the services under test seal with (they run on the development key): tests
# that publish or read personal events on the broker seal and open them with it.
WIRE_CIPHER = FieldCipher({"dev1": decode_key(DEV_ENCRYPTION_KEY, setting="test")}, "dev1")


def service_env(mongodb_url: str, rabbitmq_url: str, run_id: str, **extra: str) -> dict[str, str]:
    """Environment for one isolated system: its own topology prefix and database names."""
    env = {
        **os.environ,
        "HOLDSPACE_ENV": "development",
        "MONGODB_URL": mongodb_url,
        "RABBITMQ_URL": rabbitmq_url,
        "HOLDSPACE_TOPOLOGY_PREFIX": f"t{run_id}.",
        "HOLDSPACE_DB_PREFIX": f"t{run_id}_",
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_FORMAT": "json",
        "OUTBOX_POLL_S": "1",
        "JOBS_POLL_S": "0.5",
        "RECONCILE_AFTER_S": "30",
        "RECONCILE_POLL_S": "2",
        "RETRY_BASE_MS": "50",
        "MAX_ATTEMPTS": "3",
        # The suites sign up hundreds, and sign coordinators in dozens of times, from
        # this one address; the limits' own tests (tests/integration/test_registration.py,
        # tests/web/test_console_and_consent_pages.py) set them.
        "SIGNUP_LIMIT_PER_CLIENT": "",
        "SIGNUP_LIMIT_PER_COHORT": "",
        "SIGN_IN_LIMIT_PER_CLIENT": "",
    }
    env.update(extra)
    return env


def coordinator_headers(
    role: Role = Role.coordinator,
    *,
    subject: str = "acct_test_coordinator",
    programs: Programs | None = ALL_PROGRAMS,
) -> dict[str, str]:
    """A bearer header; a coordinator's sees every program unless ``programs`` says."""
    token = issue_token(
        TEST_JWT_SECRET,
        role=role,
        subject=subject,
        ttl_seconds=600,
        programs=programs if role is Role.coordinator else None,
    )
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    log_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.port or devinfra.free_port()
        self.log_path = self.log_dir / f"{self.name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.name],  # as the image and scripts/up run it
            env={**self.env, "HTTP_HOST": self.host, "HTTP_PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_path}\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.process.send_signal(signal.SIGUSR1)  # its stacks into the log: where it is stuck
        time.sleep(1)
        self.stop()  # not left running, retrying on its own, after the test gave up on it
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s\n{self.log_tail(150)}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
