"""The machine the benchmark runs on: its description, versions, load, and CPU and memory
per process (psutil on the PIDs of the services, the database, the broker and this process).
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

# The busiest stretch of a phase is measured over this many seconds: a phase's average
# hides a service pinned at a full core while the work piled up and idle while it drained.
WINDOW_S = 5.0

PACKAGES = (
    "aio-pika",
    "aiormq",
    "pymongo",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "aiohttp",
    "psutil",
    "matplotlib",
    "py-spy",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision(repo: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}" if head else "unknown"


def describe(repo: Path) -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(memory.total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git": git_revision(repo),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores) since boot."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def find_broker_pid() -> int | None:
    """RabbitMQ's Erlang VM (beam.smp); the broker is shared by every vhost on it."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            name = proc.info["name"] or ""
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if name.startswith("beam") and "rabbit" in cmd:
            return proc.pid
    return None


@dataclass
class _Tracked:
    name: str
    process: psutil.Process
    cpu_start: float = 0.0
    cpu_last: float = 0.0
    rss_peak: int = 0
    gone: bool = False
    window: deque = field(default_factory=deque)  # (monotonic s, cpu s) of the last WINDOW_S
    peak_share: float = 0.0  # the most of one core it used over any WINDOW_S


def _windowed(window: deque, now: float, value: float) -> float | None:
    """Add a sample; the rate of ``value`` over the last WINDOW_S, once that much is seen."""
    window.append((now, value))
    while len(window) > 1 and now - window[1][0] >= WINDOW_S:
        window.popleft()
    then, before = window[0]
    return (value - before) / (now - then) if now - then >= WINDOW_S else None


@dataclass
class PhaseUsage:
    """CPU seconds and peak resident memory per process over one phase."""

    wall_s: float
    cpu_s: dict[str, float]
    peak_rss_mib: dict[str, float]
    machine_busy_s: float
    cores: int
    peak_share: dict[str, float] = field(default_factory=dict)
    machine_peak_busy: float | None = None  # the busiest WINDOW_S, a share of all cores

    @property
    def measured_cpu_s(self) -> float:
        return sum(self.cpu_s.values())

    @property
    def foreign_cpu_share(self) -> float | None:
        """Share of the machine's CPU used by processes not measured here."""
        if self.wall_s <= 0:
            return None
        foreign = max(0.0, self.machine_busy_s - self.measured_cpu_s)
        return foreign / (self.wall_s * self.cores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "peak_rss_mib": {k: round(v, 1) for k, v in self.peak_rss_mib.items()},
            "machine_busy_cpu_s": round(self.machine_busy_s, 3),
            "peak_share": {k: round(v, 3) for k, v in self.peak_share.items()},
            "machine_peak_busy": None
            if self.machine_peak_busy is None
            else round(self.machine_peak_busy, 3),
            "window_s": WINDOW_S,
            "measured_cpu_s": round(self.measured_cpu_s, 3),
            "foreign_cpu_share": None
            if self.foreign_cpu_share is None
            else round(self.foreign_cpu_share, 4),
        }


@dataclass
class ProcessMeter:
    """Samples named processes' CPU time and RSS; one phase at a time.

    CPU time is read at the start and end of a phase (and kept from the last sample if
    a process ends meanwhile); memory is sampled every ``interval_s`` for the peak.
    """

    interval_s: float = 0.25
    tracked: dict[str, _Tracked] = field(default_factory=dict)
    _task: asyncio.Task | None = None
    _started: float = 0.0
    _busy_start: float = 0.0
    _machine_window: deque = field(default_factory=deque)
    _machine_peak: float | None = None

    def track(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        try:
            self.tracked[name] = _Tracked(name, psutil.Process(pid))
        except psutil.Error:
            pass

    def untrack(self, name: str) -> None:
        self.tracked.pop(name, None)

    def _sample(self, t: _Tracked) -> None:
        if t.gone:
            return
        try:
            with t.process.oneshot():
                cpu = t.process.cpu_times()
                t.cpu_last = cpu.user + cpu.system
                t.rss_peak = max(t.rss_peak, t.process.memory_info().rss)
        except psutil.Error:
            t.gone = True
            return
        share = _windowed(t.window, time.monotonic(), t.cpu_last)
        if share is not None:
            t.peak_share = max(t.peak_share, share)

    def _sample_machine(self) -> None:
        busy = _windowed(self._machine_window, time.monotonic(), busy_cpu_seconds())
        if busy is not None:
            cores = psutil.cpu_count(logical=True) or 1
            self._machine_peak = max(self._machine_peak or 0.0, busy / cores)

    def start_phase(self) -> None:
        self._machine_window = deque()
        self._machine_peak = None
        self._sample_machine()
        for t in self.tracked.values():
            t.rss_peak = 0
            t.window.clear()
            t.peak_share = 0.0
            self._sample(t)
            t.cpu_start = t.cpu_last
        self._started = time.monotonic()
        self._busy_start = busy_cpu_seconds()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._sample_machine()
            for t in list(self.tracked.values()):
                self._sample(t)

    async def end_phase(self) -> PhaseUsage:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for t in self.tracked.values():
            self._sample(t)
        return PhaseUsage(
            wall_s=time.monotonic() - self._started,
            cpu_s={n: max(0.0, t.cpu_last - t.cpu_start) for n, t in self.tracked.items()},
            peak_rss_mib={n: t.rss_peak / 2**20 for n, t in self.tracked.items()},
            machine_busy_s=busy_cpu_seconds() - self._busy_start,
            cores=psutil.cpu_count(logical=True) or 1,
            peak_share={n: t.peak_share for n, t in self.tracked.items()},
            machine_peak_busy=self._machine_peak,
        )
