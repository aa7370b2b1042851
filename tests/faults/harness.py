"""The fault harness: real processes, faults injected into them, and the Jepsen-style tally.

Faults act on processes this test started (never another's): a database frozen with
SIGSTOP looks, from its clients, exactly like one whose network was black-holed (the
connections stay open and nothing answers); SIGCONT heals it. A link is cut, delayed
or black-holed by Toxiproxy (scripts/ensure-toxiproxy builds it) put between a client
and the server it talks to.

``Tally`` scores a run the way Jepsen's total-queue checker does (reliability.md §9):
every attempted operation is recorded by its key with whether it was acknowledged,
every effect found afterwards by the key that caused it; lost = acknowledged without
an effect, unexpected = an effect nobody attempted, duplicated = a key with two effects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared import devinfra
from tests.canary import CANARY

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def frozen(process: subprocess.Popen) -> Iterator[None]:
    """The process stops answering (and its sockets stay open) until the block ends."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


class Toxiproxy:
    """A toxiproxy-server of this test's own, on a free loopback port."""

    def __init__(self, log_dir: Path) -> None:
        built = subprocess.run(
            [str(ROOT / "scripts" / "ensure-toxiproxy")], capture_output=True, text=True
        )
        assert built.returncode == 0, built.stderr
        self.port = devinfra.free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "toxiproxy.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    built.stdout.strip().splitlines()[-1],
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.api.get("/version").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)

    def proxy(self, name: str, upstream_port: int) -> int:
        """A new proxy to 127.0.0.1:``upstream_port``; returns the port to connect to."""
        listen = devinfra.free_port()
        answer = self.api.post(
            "/proxies",
            json={
                "name": name,
                "listen": f"127.0.0.1:{listen}",
                "upstream": f"127.0.0.1:{upstream_port}",
            },
        )
        answer.raise_for_status()
        return listen

    def black_hole(self, name: str) -> None:
        """Nothing gets through either way and no connection is closed: what a dead
        route or a stuck firewall does (the ``timeout`` toxic with timeout 0)."""
        for stream in ("upstream", "downstream"):
            answer = self.api.post(
                f"/proxies/{name}/toxics",
                json={
                    "name": f"black-hole-{stream}",
                    "type": "timeout",
                    "stream": stream,
                    "attributes": {"timeout": 0},
                },
            )
            answer.raise_for_status()

    def heal(self, name: str) -> None:
        for stream in ("upstream", "downstream"):
            self.api.delete(f"/proxies/{name}/toxics/black-hole-{stream}").raise_for_status()

    def close(self) -> None:
        self.api.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Tally:
    attempted: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    effects: Counter[str] = field(default_factory=Counter)

    def attempt(self, key: str, *, acknowledged: bool) -> None:
        self.attempted.add(key)
        if acknowledged:
            self.acknowledged.add(key)

    def found(self, keys: Iterable[str]) -> None:
        self.effects.update(keys)

    @property
    def lost(self) -> set[str]:
        return self.acknowledged - set(self.effects)

    @property
    def unexpected(self) -> set[str]:
        return set(self.effects) - self.attempted

    @property
    def duplicated(self) -> set[str]:
        return {key for key, n in self.effects.items() if n > 1}

    def score(self) -> dict[str, int]:
        return {
            "attempted": len(self.attempted),
            "acknowledged": len(self.acknowledged),
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
        }

    def assert_valid(self) -> None:
        score = self.score()
        assert (score["lost"], score["duplicated"], score["unexpected"]) == (0, 0, 0), score


def sign_up_body(key: str, label: str) -> dict[str, Any]:
    """A sign-up whose address's local part is ``key`` (how the tests find its effects),
    named with the suite's canary (tests/canary.py)."""
    return {
        "name": f"{label} {key} {CANARY}",
        "email": f"{key}@example.org",
        "age_attested": True,
        "safety_answers": {"self_harm": False, "unsafe_now": False},
        "privacy_notice_accepted": True,
        "language": "en",
        "timezone": "Asia/Shanghai",
    }
