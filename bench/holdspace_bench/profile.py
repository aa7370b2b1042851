"""Where the time goes: py-spy samples each service process; the stacks are summed up.

py-spy records on-CPU samples only (threads waiting in the event loop's poll are idle
and not sampled), so shares are shares of the process's CPU time. The summary gives,
per process, the share of samples by library (our packages, pydantic, pymongo, ...),
and the functions with the most samples at the top of the stack (self time).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
OURS = ("registration", "consent", "payments", "notifications", "shared", "holdspace_bench")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


def start(pid: int, out: Path, duration_s: float, rate: int = 97) -> subprocess.Popen | None:
    exe = py_spy()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--duration",
            str(max(1, int(duration_s))),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--full-filenames",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(out.with_suffix(".log"), "wb"),  # noqa: SIM115 - the child keeps it
    )


def library_of(path: str) -> str:
    """A bucket for a frame's file: our package, a third-party package, or stdlib:<module>."""
    p = path.replace("\\", "/")
    if "site-packages/" in p:
        rest = p.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    for ours in OURS:
        if f"/services/{ours}/" in p or f"/{ours}/" in p and "/lib/python" not in p:
            return f"{ours} (ours)"
    m = re.search(r"/lib/python3\.\d+/(?P<mod>[^/]+)", p)
    if m:
        return f"stdlib:{m.group('mod').removesuffix('.py')}"
    if p.startswith("<"):
        return p
    return Path(p).name


def parse_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


# Leaf frames of a thread that waits: py-spy's idle detection misses some of them.
WAITING = {("wait", "stdlib:threading"), ("Condition.wait", "stdlib:threading")}
# The asyncio runner as the leaf: the event loop's own native code (uvloop): I/O, timers.
EVENT_LOOP = ("Runner.run", "stdlib:asyncio")


def summarize(raw_text: str, top: int = 12) -> dict[str, Any]:
    """Collapsed stacks (``frame;frame;... count``) to shares of on-CPU samples.

    - by library: of the frame at the top of the stack (where the CPU was);
    - by function: the same frame (self time);
    - by our code: the innermost frame of our own packages on the stack, so a call into
      pymongo or pydantic counts for the function of ours that made it (inclusive).
    """
    by_library: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    by_ours: Counter[str] = Counter()
    total = waiting = 0
    for line in raw_text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            parse_frame(f)
            for f in stack.split(";")
            if f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        func, path = frames[-1]
        library = library_of(path)
        if (func, library) in WAITING or (func.rsplit(".", 1)[-1], library) in WAITING:
            waiting += count
            continue
        total += count
        if (func, library) == EVENT_LOOP:
            func, library = "event loop (native I/O and callbacks)", "uvloop"
        by_library[library] += count
        by_self[f"{func} ({library})"] += count
        ours = next(
            (
                f"{fn} ({library_of(fp)})"
                for fn, fp in reversed(frames)
                if library_of(fp).endswith("(ours)")
            ),
            None,
        )
        by_ours[ours or "outside our code"] += count

    def shares(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "share": round(v / total, 4)} for k, v in counter.most_common(top)]

    if total == 0:
        return {
            "samples": 0,
            "waiting_excluded": waiting,
            "by_library": [],
            "by_function": [],
            "by_our_code": [],
        }
    return {
        "samples": total,
        "waiting_excluded": waiting,
        "by_library": shares(by_library),
        "by_function": shares(by_self),
        "by_our_code": shares(by_ours),
    }
