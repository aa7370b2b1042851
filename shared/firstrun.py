"""The development system's first run: what a newcomer needs to click through it.

Once every service answers, ``scripts/up`` (``devrun ready --first-run``) seeds the
consent forms, then the programs with their cohorts and scholarship budgets, then the
programs' work between sessions (progress), and makes a demo coordinator account, then
says how to sign in. Each step runs the documented command as a subprocess (the common
library imports no service) and is idempotent, so every later run repeats it
harmlessly. Development only: ``build_plan`` asks for it only when HOLDSPACE_ENV is
development, and never when SEED=0.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEMO_EMAIL = "demo@holdspace.test"
# Development only, and printed on every run: the account is a convenience for the
# machine it runs on, as the dev JWT secret is (production refuses those secrets).
DEMO_PASSWORD = "holdspace-demo"
STEP_TIMEOUT_S = 120


@dataclass(frozen=True)
class Urls:
    registration: str
    consent: str
    payments: str | None
    progress: str | None = None


def steps(urls: Urls, python: str = sys.executable) -> list[tuple[str, list[str], str | None]]:
    """(what, command, its stdin) in order: the forms before the programs that name them."""
    ops = str(Path(python).with_name("ops"))
    budgets = ["--payments-url", urls.payments] if urls.payments else ["--no-budgets"]
    return [
        ("consent forms", [python, "-m", "consent.seed", "--url", urls.consent], None),
        (
            "programs and cohorts",
            [python, "-m", "registration.seed", "--url", urls.registration, *budgets],
            None,
        ),
        *(
            [
                (
                    "work between sessions",
                    [python, "-m", "progress.seed", "--url", urls.progress]
                    + ["--registration-url", urls.registration],
                    None,
                )
            ]
            if urls.progress
            else []
        ),
        (
            "demo coordinator",
            [ops, "web", "add-coordinator", DEMO_EMAIL, "--name", "Demo coordinator"]
            + ["--all-programs", "--password-stdin"],
            DEMO_PASSWORD + "\n",
        ),
    ]


def first_run(urls: Urls, web_url: str | None, python: str = sys.executable) -> bool:
    """Run each step, saying how it went; True when all went well."""
    ok = True
    for what, command, stdin in steps(urls, python):
        try:
            done = subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
            )
            failed = done.returncode != 0
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] if failed else []
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed, detail = True, [str(exc)]
        ok &= not failed
        status = f"failed: {' '.join(detail)}" if failed else "ready"
        print(f"first run: {what} {status}", flush=True)
    if ok and web_url:
        print(
            f"Sign in at {web_url}/console as {DEMO_EMAIL}, password {DEMO_PASSWORD}"
            " (a development account)",
            flush=True,
        )
    return ok
