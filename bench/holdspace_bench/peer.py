"""The peer: pretix (PyPI), measured in the same run and on the same cores as Holdspace.

pretix is installed in its own virtual environment (it pins its own Django, celery and
aiohttp; mixing them into Holdspace's locked environment would conflict), backed by a
private PostgreSQL cluster (on sqlite pretix takes no quota lock at all) and served by
gunicorn's sync workers, all on free ports of 127.0.0.1 under the work dir. The load
comes from this process, through ``load.open_loop`` and ``stats.latency_summary``, as
Holdspace's sign-ups do:

- the ramp: orders at rising rates against an event whose quota is too large to run out;
- the race: ``race_n`` clients released at once on a fresh event with a ``seats`` quota.

``pretix_peer`` never raises for a failed install, start or migration: it returns
``{"status": "unavailable", "why": ...}`` with the step and the end of its log. Every
process it starts is stopped before it returns, also when it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from holdspace_bench import stats
from holdspace_bench.load import new_session, open_loop, released_at_once
from holdspace_bench.peer_pretix_setup import CONFIG, ORGANIZER, SCRIPT
from shared import devinfra

PRETIX_VERSION = "2026.8.0"
GUNICORN_VERSION = "27.0.1"
WORKERS = 2
RAMP_QUOTA = 1_000_000
KEPT_UP_P99_MS = 1000.0
DEFAULT_VENV = devinfra.REPO_ROOT / "var" / "bench" / "pretix-venv"
KEPT_UP_RULE = (
    "A step kept up when every order sent was created (HTTP 201, no error) and the p99 "
    f"latency, counted from each order's scheduled send time, was at most {KEPT_UP_P99_MS:g} ms"
)
CAVEATS = [
    "pretix's 201 means the seat is decided: the order exists and the quota was checked "
    "under its lock; Holdspace answers a sign-up with 202 and decides the seat later, "
    "so the latencies measure different amounts of work.",
    "pretix runs without Redis and without celery workers: its tasks (notifications, "
    "webhooks) run inline in the request, and its cache is per-process memory. Production "
    "pretix moves that work to celery, which would add processes on the same cores.",
    "pretix, its PostgreSQL and the load generator share the same 2 cores, as Holdspace, "
    "its broker, its database and the load generator do.",
    "Holdspace's MongoDB journals every write before acknowledging it; PostgreSQL keeps "
    "its default durability (fsync and synchronous_commit on).",
    "The ramp stops after the first step that does not keep up: a higher rate only piles "
    "up a longer backlog.",
]


class Unavailable(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step, self.detail = step, detail


# --- pure parts ---------------------------------------------------------------------------


def parse_setup_output(text: str) -> dict[str, dict[str, Any]]:
    """The setup script's ``TOKEN=… ITEM=… QUOTA=… EVENT=…`` lines, by event slug."""
    events: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(TOKEN|ITEM|QUOTA|EVENT)=(\S+)", line))
        if set(fields) != {"TOKEN", "ITEM", "QUOTA", "EVENT"}:
            continue
        events[fields["EVENT"]] = {
            "token": fields["TOKEN"],
            "item": int(fields["ITEM"]),
            "quota": int(fields["QUOTA"]),
            "event": fields["EVENT"],
        }
    return events


def pip_versions(pip_show: str) -> dict[str, str]:
    """``pip show``'s output as {lower-case name: version}."""
    out: dict[str, str] = {}
    name = None
    for line in pip_show.splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip().lower()
        elif line.startswith("Version:") and name:
            out[name] = line.split(":", 1)[1].strip()
    return out


def venv_ready(versions: dict[str, str]) -> bool:
    """Whether a venv holding ``versions`` can be reused as it is."""
    return versions.get("pretix") == PRETIX_VERSION and versions.get("gunicorn") == GUNICORN_VERSION


def step_kept_up(*, sent: int, created: int, errors: int, p99_ms: float | None) -> tuple[bool, str]:
    """Whether pretix kept up with a ramp step (see KEPT_UP_RULE), and why not."""
    if sent == 0:
        return False, "nothing sent"
    if errors or created != sent:
        return False, f"{sent - created} of {sent} orders not created"
    if p99_ms is None or p99_ms > KEPT_UP_P99_MS:
        return False, f"p99 {p99_ms} ms over {KEPT_UP_P99_MS:g} ms"
    return True, "kept up"


def race_verdict(
    replies: list[tuple[int, str]], *, seats: int, orders_listed: int | None
) -> dict[str, Any]:
    """The race's counts from its replies (status, body; status -1 for no answer).

    ``held`` is True iff exactly ``seats`` orders exist and exactly ``seats`` replies were
    201; ``clean`` also asks that every other reply was a 400 quota refusal."""
    created = sum(1 for s, _ in replies if s == 201)
    refusals = sum(1 for s, t in replies if s == 400 and "not enough quota" in t)
    other: dict[str, int] = {}
    samples: dict[str, str] = {}
    for status, text in replies:
        if status == 201 or (status == 400 and "not enough quota" in text):
            continue
        key = str(status)
        other[key] = other.get(key, 0) + 1
        samples.setdefault(key, text[:200])
    held = orders_listed == seats and created == seats
    return {
        "clients": len(replies),
        "seats": seats,
        "created_201": created,
        "quota_refusals_400": refusals,
        "other": other,
        "other_samples": samples,
        "orders_in_pretix": orders_listed,
        "held": held,
        "clean": held and not other,
    }


# --- processes ----------------------------------------------------------------------------


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _run(
    step: str,
    argv: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 600.0,
    progress: Callable[[float], None] | None = None,
) -> str:
    """Run a command to its end without blocking the loop; its output (stdout and
    stderr) is returned and kept in ``log_path``. Killed on timeout or cancellation."""
    started = time.monotonic()
    popen, mark = _spawn(argv, log_path, env, cwd)
    next_progress = started + 20
    try:
        while popen.poll() is None:
            now = time.monotonic()
            if now - started > timeout_s:
                raise Unavailable(step, f"no end after {timeout_s:g} s:\n{_tail(log_path)}")
            if progress and now >= next_progress:
                progress(now - started)
                next_progress += 20
            await asyncio.sleep(0.25)
    finally:
        if popen.poll() is None:  # timed out or cancelled: its group is ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
    output = _read_from(log_path, mark)
    if popen.returncode != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise Unavailable(step, f"`{' '.join(argv)}` exited {popen.returncode}:\n{tail}")
    return output


def _spawn(
    argv: list[str], log_path: Path, env: dict[str, str] | None, cwd: Path | None
) -> tuple[subprocess.Popen, int]:
    with open(log_path, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        return popen, out.tell()


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _pg_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


class _Peer:
    """The processes of one pretix: its PostgreSQL cluster and its gunicorn."""

    def __init__(self, root: Path, venv: Path, log: Callable[[str], None]) -> None:
        self.root, self.venv, self.log = root, venv, log
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pg_dir, self.pg_bin = root / "pg", _pg_bin()
        self.as_postgres: list[str] = []
        self.pg_started = False
        self.gunicorn: subprocess.Popen | None = None
        self.env = {**os.environ, "PRETIX_CONFIG_FILE": str(root / "pretix.cfg")}
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.commands: dict[str, str] = {}

    def py(self, name: str = "python") -> str:
        return str(self.venv / "bin" / name)

    async def install(self) -> tuple[str, float]:
        started = time.monotonic()
        if (self.venv / "bin" / "python").exists():
            if venv_ready(self.pip_show("pretix", "gunicorn")):
                return "reused", round(time.monotonic() - started, 1)
        else:
            self.log(f"  pretix: creating the venv {self.venv}")
            self.venv.parent.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "venv", str(self.venv)]
            await _run("creating pretix's venv", argv, log_path=self.logs / "install.log")
        self.log(f"  pretix: pip install pretix=={PRETIX_VERSION} gunicorn=={GUNICORN_VERSION}")
        argv = [self.py(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        argv += [f"pretix=={PRETIX_VERSION}", f"gunicorn=={GUNICORN_VERSION}"]
        await _run("pip install pretix", argv, log_path=self.logs / "install.log", timeout_s=1200)
        return "installed", round(time.monotonic() - started, 1)

    def pip_show(self, *names: str) -> dict[str, str]:
        show = [self.py(), "-m", "pip", "show", *names]
        return pip_versions(subprocess.run(show, capture_output=True, text=True).stdout)

    def versions(self) -> dict[str, str | None]:
        found = self.pip_show("pretix", "django", "gunicorn", "psycopg2-binary")
        pg = subprocess.run([str(self.pg_bin / "postgres"), "--version"], capture_output=True)
        return {
            "pretix": found.get("pretix"),
            "django": found.get("django"),
            "gunicorn": found.get("gunicorn"),
            "psycopg2": found.get("psycopg2-binary"),
            "postgresql": pg.stdout.decode().strip().removeprefix("postgres (PostgreSQL) "),
        }

    async def start_postgres(self, port: int) -> None:
        if self.pg_bin is None:
            raise Unavailable(
                "PostgreSQL", "not installed: no pg_ctl in /usr/lib/postgresql/*/bin or on PATH"
            )
        sock = self.pg_dir / "s"
        sock.mkdir(parents=True)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("PostgreSQL", "running as root and no user postgres") from None
            for path in (self.pg_dir, sock):
                shutil.chown(path, "postgres")
            closed = [p for p in self.pg_dir.parents if not p.stat().st_mode & 0o001]
            if closed:
                raise Unavailable("PostgreSQL", f"user postgres cannot enter {closed[0]}")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        data = self.pg_dir / "data"
        initdb = [str(self.pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        initdb += ["--encoding=UTF8", "--locale=C"]
        log_path = self.logs / "postgres-setup.log"
        await _run("initdb", self.as_postgres + initdb, log_path=log_path, cwd=self.pg_dir)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock}"
        start = [str(self.pg_bin / "pg_ctl"), "-D", str(data), "-l", str(self.pg_dir / "log")]
        start += ["-w", "-t", "60", "-o", options, "start"]
        self.commands["postgresql"] = " ".join(start)
        self.pg_started = True  # from here on, stop() stops it
        try:
            await _run(
                "starting PostgreSQL", self.as_postgres + start, log_path=log_path, cwd=self.pg_dir
            )
        except Unavailable as exc:
            raise Unavailable(exc.step, f"{exc.detail}\n{_tail(self.pg_dir / 'log')}") from None
        createdb = [str(self.pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port)]
        await _run("createdb", createdb + ["-U", "postgres", "pretix"], log_path=log_path)

    def write_config(self, url: str, db_port: int) -> None:
        datadir = self.root / "pretix-data"
        datadir.mkdir(exist_ok=True)
        text = CONFIG.format(
            url=url,
            datadir=datadir,
            secret=secrets.token_urlsafe(40),
            db_name="pretix",
            db_port=db_port,
        )
        (self.root / "pretix.cfg").write_text(text)

    async def migrate(self) -> None:
        argv = [self.py(), "-m", "pretix", "migrate", "--no-input"]
        await _run(
            "python -m pretix migrate",
            argv,
            log_path=self.logs / "migrate.log",
            env=self.env,
            timeout_s=1200,
            progress=lambda s: self.log(f"  pretix: migrating… {s:.0f} s"),
        )

    async def create_events(self, events: dict[str, int]) -> dict[str, dict[str, Any]]:
        script = self.root / "setup_events.py"
        script.write_text(SCRIPT)
        argv = [self.py(), str(script)] + [f"{slug}:{seats}" for slug, seats in events.items()]
        output = await _run(
            "creating pretix's events", argv, log_path=self.logs / "setup.log", env=self.env
        )
        parsed = parse_setup_output(output)
        if set(parsed) != set(events):
            raise Unavailable("creating pretix's events", f"unexpected output:\n{output[-2000:]}")
        return parsed

    def start_gunicorn(self, port: int) -> None:
        argv = [self.py("gunicorn"), "pretix.wsgi", "--name", "pretix-bench"]
        argv += ["--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
        self.commands["gunicorn"] = " ".join(argv)
        with open(self.logs / "gunicorn.log", "ab") as out:
            self.gunicorn = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        """Stop gunicorn (SIGTERM, SIGKILL to its group after 30 s) and PostgreSQL."""
        g = self.gunicorn
        if g is not None and g.poll() is None:
            self.log(f"  pretix: stopping gunicorn (pid {g.pid})")
            g.send_signal(signal.SIGTERM)
            try:
                g.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(g.pid, signal.SIGKILL)  # its own group: the master and workers
                g.wait()
        if self.pg_started and self.pg_bin is not None:
            data = self.pg_dir / "data"
            self.log("  pretix: stopping PostgreSQL")
            argv = [str(self.pg_bin / "pg_ctl"), "-D", str(data), "stop", "-m", "fast", "-t", "60"]
            done = subprocess.run(
                self.as_postgres + argv, capture_output=True, check=False, cwd=self.pg_dir
            )
            pid_file = data / "postmaster.pid"
            if done.returncode != 0 and pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)  # the postmaster started above
            self.pg_started = False


# --- HTTP ---------------------------------------------------------------------------------


def _order(item: int, i: int, *, simulate: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": f"bench{i}@example.org",
        "locale": "en",
        "sales_channel": "web",
        "payment_provider": "manual",
        "positions": [{"item": item}],
    }
    if simulate:
        body["simulate"] = True
    return body


async def _wait_ready(peer: _Peer, base: str, headers: dict[str, str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            assert peer.gunicorn is not None
            if peer.gunicorn.poll() is not None:
                raise Unavailable(
                    "starting gunicorn", f"exited:\n{_tail(peer.logs / 'gunicorn.log')}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{base}/api/v1/organizers/", headers=headers) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                tail = _tail(peer.logs / "gunicorn.log")
                raise Unavailable("starting gunicorn", f"no answer in {timeout_s:g} s:\n{tail}")
            await asyncio.sleep(0.5)


async def _warm_up(url: str, ev: dict[str, Any], headers: dict[str, str], n: int) -> None:
    """``n`` simulated orders (nothing is saved), 4 at a time: every worker loads pretix
    and the event. Not one accepted means the orders themselves are wrong: unavailable."""
    gate = asyncio.Semaphore(4)
    replies: list[tuple[int, str]] = []
    async with new_session() as session:

        async def one(i: int) -> None:
            async with (
                gate,
                session.post(url, json=_order(ev["item"], i, simulate=True), headers=headers) as r,
            ):
                replies.append((r.status, (await r.text())[:300]))

        await asyncio.gather(*(one(i) for i in range(n)))
    if not any(200 <= status < 300 for status, _ in replies):
        raise Unavailable("warming up", f"no simulated order accepted: {replies[:1]}")


async def _ramp_step(
    url: str, ev: dict[str, Any], headers: dict[str, str], rate: float, step_s: float, first: int
) -> dict[str, Any]:
    samples: dict[str, str] = {}
    created = 0
    async with new_session() as session:

        async def send(i: int, _intended: float) -> str | None:
            nonlocal created
            async with session.post(url, json=_order(ev["item"], first + i), headers=headers) as r:
                text = await r.text()
                if r.status != 201:
                    samples.setdefault(str(r.status), text[:200])
                    return f"HTTP {r.status}"
            created += 1
            return None

        result = await open_loop(rate, step_s, send, grace_s=120)
    latency = stats.latency_summary(result.ok_latencies, failed=result.errors)
    kept, why = step_kept_up(
        sent=result.sent, created=created, errors=result.errors, p99_ms=latency["p99_ms"]
    )
    achieved = stats.steady_rate(result.completions)
    lag = stats.percentile(result.send_lag_s, 99)
    return {
        "offered_per_s": rate,
        "duration_s": step_s,
        "sent": result.sent,
        "created": created,
        "achieved_per_s": None if achieved is None else round(achieved, 1),
        "latency": latency,
        "errors": result.errors,
        "error_kinds": result.error_kinds,
        "error_samples": samples,
        "send_lag_p99_ms": None if lag is None else round(lag * 1000, 2),
        "kept_up": kept,
        "why": why,
    }


async def _race(
    base: str, ev: dict[str, Any], headers: dict[str, str], n: int, seats: int
) -> dict[str, Any]:
    events = f"{base}/api/v1/organizers/{ORGANIZER}/events/{ev['event']}"
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        gate = asyncio.Event()
        latencies: list[float] = []
        replies: list[tuple[int, str]] = []

        async def one(i: int) -> None:
            await gate.wait()
            started = time.perf_counter()
            try:
                async with s.post(
                    f"{events}/orders/", json=_order(ev["item"], i), headers=headers
                ) as r:
                    replies.append((r.status, await r.text()))
                latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, TimeoutError) as exc:
                replies.append((-1, repr(exc)))

        wall = await released_at_once(one, n, gate)
        async with s.get(f"{events}/orders/", headers=headers) as r:
            listed = (await r.json()).get("count") if r.status == 200 else None
        async with s.get(f"{events}/quotas/{ev['quota']}/availability/", headers=headers) as r:
            availability = await r.json() if r.status == 200 else {"status": r.status}
    out = race_verdict(replies, seats=seats, orders_listed=listed)
    out["availability"] = availability
    out["wall_s"] = round(wall, 2)
    out["latency"] = stats.latency_summary(latencies, failed=len(replies) - len(latencies))
    return out


def _fresh_dir(work: Path) -> Path:
    """A new directory under ``work`` that the postgres user can enter."""
    work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pretix-", dir=work))
    root.chmod(0o755)
    return root


# --- the peer -----------------------------------------------------------------------------


async def pretix_peer(
    work: Path,
    *,
    rates: list[float],
    step_s: float,
    race_n: int,
    seats: int = 8,
    log: Callable[[str], None],
    venv: Path | None = None,
) -> dict[str, Any]:
    """Install (or reuse) pretix, start it on a private PostgreSQL, and measure the ramp
    (``rates`` ascending, ``step_s`` each, stopped after the first step not kept up; see
    KEPT_UP_RULE) and the race (``race_n`` clients at once on a ``seats`` quota).

    Returns ``{"status": "measured", ...}``, or ``{"status": "unavailable", "why": ...}``
    when a step fails (with what was measured before it). Stops all it started."""
    peer = _Peer(_fresh_dir(work), venv or DEFAULT_VENV, log)
    root = peer.root
    out: dict[str, Any] = {"status": "measured", "work_dir": str(root), "venv": str(peer.venv)}
    setup: dict[str, Any] = {}
    out["setup_s"] = setup
    step = "installing pretix"
    try:
        setup["venv"], setup["install"] = await peer.install()
        log(f"  pretix: venv {setup['venv']} ({setup['install']} s)")
        step = "starting PostgreSQL"
        t = time.monotonic()
        db_port, http_port = devinfra.free_port(), devinfra.free_port()
        await peer.start_postgres(db_port)
        setup["initdb"] = round(time.monotonic() - t, 1)
        out["versions"] = peer.versions()
        out["workers"] = WORKERS
        log(f"  pretix: PostgreSQL {out['versions']['postgresql']} up ({setup['initdb']} s)")
        base = f"http://127.0.0.1:{http_port}"
        peer.write_config(base, db_port)
        step = "migrating"
        log("  pretix: migrating (about 80 s)")
        t = time.monotonic()
        await peer.migrate()
        setup["migrate"] = round(time.monotonic() - t, 1)
        log(f"  pretix: migrated in {setup['migrate']} s")
        step = "creating the events"
        t = time.monotonic()
        evs = await peer.create_events({"ramp": RAMP_QUOTA, "race": seats})
        setup["events"] = round(time.monotonic() - t, 1)
        headers = {"Authorization": f"Token {evs['ramp']['token']}"}
        step = "starting gunicorn"
        t = time.monotonic()
        peer.start_gunicorn(http_port)
        await _wait_ready(peer, base, headers, timeout_s=180)
        orders = f"{base}/api/v1/organizers/{ORGANIZER}/events/{{}}/orders/"
        await _warm_up(orders.format("ramp"), evs["ramp"], headers, 40)
        await _warm_up(orders.format("race"), evs["race"], headers, 8)
        setup["warm_up"] = round(time.monotonic() - t, 1)
        log(f"  pretix: gunicorn ({WORKERS} workers) started and warmed in {setup['warm_up']} s")
        out["commands"] = peer.commands
        out["kept_up_rule"] = KEPT_UP_RULE
        out["ramp"], out["ramp_stopped"], out["rates_not_offered"] = [], None, []
        step = "the ramp"
        sent = 0
        ordered = sorted(rates)
        for k, rate in enumerate(ordered):
            log(f"  pretix: orders at {rate:g}/s for {step_s:g} s")
            r = await _ramp_step(orders.format("ramp"), evs["ramp"], headers, rate, step_s, sent)
            sent += r["sent"]
            out["ramp"].append(r)
            lat = r["latency"]
            log(
                f"    created {r['created']}/{r['sent']}, achieved {r['achieved_per_s']}/s, "
                f"p50 {lat['p50_ms']} p99 {lat['p99_ms']} ms, errors {r['errors']}: {r['why']}"
            )
            if not r["kept_up"]:
                out["rates_not_offered"] = ordered[k + 1 :]
                out["ramp_stopped"] = f"after {rate:g}/s ({r['why']})"
                break
            await asyncio.sleep(2)
        kept = [r["offered_per_s"] for r in out["ramp"] if r["kept_up"]]
        out["highest_rate_kept_up"] = max(kept) if kept else None
        step = "the race"
        log(f"  pretix: race: {race_n} orders at once for {seats} seats")
        out["race"] = await _race(base, evs["race"], headers, race_n, seats)
        race = out["race"]
        log(
            f"    held {race['held']}: created {race['created_201']}, refused "
            f"{race['quota_refusals_400']}, other {race['other']}, orders "
            f"{race['orders_in_pretix']}, wall {race['wall_s']} s, "
            f"p99 {race['latency']['p99_ms']} ms"
        )
        out["caveats"] = CAVEATS
    except Unavailable as exc:
        out.update(status="unavailable", step=exc.step, why=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the run goes on
        tail = _tail(peer.logs / "gunicorn.log", 10)
        out.update(status="unavailable", step=step, why=f"{step}: {exc!r}\n{tail}".strip())
    finally:
        peer.stop()
    if out["status"] == "unavailable":
        log(f"  pretix: unavailable: {out['why']}")
    return out


# --- the report ---------------------------------------------------------------------------


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in kinds.items()) or "none"


def markdown(peer: dict[str, Any], holdspace_ramp: list[dict] | None = None) -> list[str]:
    """The body of the report's section on pretix (the caller renders its heading)."""
    if peer.get("status") != "measured":
        why = str(peer.get("why") or "no reason was recorded")
        first, _, rest = why.partition("\n")
        lines = [f"pretix could not be measured in this run. It failed at {first}"]
        if rest.strip():
            lines += ["", "```", *rest.strip().splitlines(), "```"]
        return lines
    v, s = peer.get("versions", {}), peer.get("setup_s", {})
    if s.get("venv") == "reused":
        install = "reused from an earlier run"
    else:
        install = f"installed in {_f(s.get('install'))} s"
    lines = [
        f"pretix {v.get('pretix')} (Django {v.get('django')}) from PyPI, in its own virtual "
        f"environment ({install}), served by gunicorn {v.get('gunicorn')} with "
        f"{peer.get('workers')} sync workers, on PostgreSQL {v.get('postgresql')}, a private "
        "cluster on 127.0.0.1 with default durability. Set-up: initdb and start "
        f"{_f(s.get('initdb'))} s, migrate {_f(s.get('migrate'))} s, events "
        f"{_f(s.get('events'))} s, gunicorn start and warm-up {_f(s.get('warm_up'))} s. Orders "
        "go through pretix's REST API (`POST /api/v1/organizers/bench/events/<event>/orders/`, "
        "one 10 EUR seat each, created pending), sent by the same open loop as Holdspace's "
        "sign-ups: each latency counts from the order's scheduled send time.",
        "",
        "Orders at rising rates, on an event whose quota cannot run out. "
        f"{peer.get('kept_up_rule', KEPT_UP_RULE)}.",
        "",
        "| offered/s | s | achieved/s | p50 ms | p95 ms | p99 ms | max ms | created | errors | kept up |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in peer.get("ramp", []):
        lat = r.get("latency", {})
        lines.append(
            f"| {_f(r['offered_per_s'])} | {_f(r['duration_s'])} | {_f(r.get('achieved_per_s'))} "
            f"| {_f(lat.get('p50_ms'), 0)} | {_f(lat.get('p95_ms'), 0)} "
            f"| {_f(lat.get('p99_ms'), 0)} | {_f(lat.get('max_ms'), 0)} | {_f(r.get('created'))} "
            f"| {_f(r.get('errors'))} | {'yes' if r.get('kept_up') else 'no'} |"
        )
    for r in peer.get("ramp", []):
        if r.get("errors"):
            samples = "; ".join(f"{k}: {t}" for k, t in r.get("error_samples", {}).items())
            lines += [
                "",
                f"At {_f(r['offered_per_s'])}/s: {_kinds(r.get('error_kinds', {}))}"
                + (f" (e.g. {samples})" if samples else ""),
            ]
    if peer.get("ramp_stopped"):
        rest = ", ".join(_f(x) for x in peer.get("rates_not_offered", [])) or "none"
        lines += [
            "",
            f"The ramp stopped {peer['ramp_stopped']}: a higher rate only piles up a longer "
            f"backlog. Not offered: {rest}.",
        ]
    race = peer.get("race")
    if race:
        lat, avail = race.get("latency", {}), race.get("availability", {})
        verdict = "held" if race.get("held") else "NOT held"
        lines += [
            "",
            f"Quota race: {_f(race['clients'])} orders at once for one quota of "
            f"{race['seats']} seats: "
            f"**{verdict}** ({_f(race.get('orders_in_pretix'))} orders in pretix); "
            f"{_f(race['created_201'])} created (201), {_f(race['quota_refusals_400'])} refused "
            f"for quota (400), other: {_kinds(race.get('other', {}))}; wall "
            f"{_f(race.get('wall_s'))} s, p50 {_f(lat.get('p50_ms'), 0)} ms, p99 "
            f"{_f(lat.get('p99_ms'), 0)} ms; afterwards pretix reports "
            f"{_f(avail.get('available_number'))} seats available and "
            f"{_f(avail.get('pending_orders'))} pending orders.",
        ]
        for status, text in race.get("other_samples", {}).items():
            lines.append(f"- reply {status}: `{text}`")
    if holdspace_ramp is not None:
        lines += [""] + _side_by_side(peer.get("ramp", []), holdspace_ramp)
    lines += ["", "Caveats:", ""] + [f"- {c}" for c in peer.get("caveats", [])]
    return lines


def _side_by_side(pretix: list[dict], holdspace: list[dict]) -> list[str]:
    theirs = {r["offered_per_s"]: r for r in pretix}
    ours = {r["offered_per_s"]: r for r in holdspace}
    common = sorted(set(theirs) & set(ours))

    def best(steps: list[dict]) -> str:
        kept = [r["offered_per_s"] for r in steps if r.get("kept_up")]
        return f"{_f(max(kept))}/s" if kept else "none"

    lines = [
        f"Highest rate kept up: Holdspace {best(holdspace)}, pretix {best(pretix)} (Holdspace's "
        "latency is the sign-up's 202, the seat decided later; pretix's is the order's 201, "
        "the seat decided)."
    ]
    if not common:
        both = "; ".join(
            f"{name}: {', '.join(_f(x) for x in sorted(rs))}/s"
            for name, rs in (("Holdspace", ours), ("pretix", theirs))
        )
        return lines + ["", f"No rate was offered to both ({both})."]
    lines += [
        "",
        "| offered/s | Holdspace achieved/s | p50 ms | p99 ms | errors "
        "| pretix achieved/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in common:
        cells = [_f(rate)]
        for r in (ours[rate], theirs[rate]):
            lat = r.get("latency", {})
            cells += [
                _f(r.get("achieved_per_s")),
                _f(lat.get("p50_ms"), 0),
                _f(lat.get("p99_ms"), 0),
                _f(r.get("errors")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
