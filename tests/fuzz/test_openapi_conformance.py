"""Row 20 of docs/reliability.md: Schemathesis, every check, stateful, on each service.

Each service runs as a real process against the real broker and database, and is tested
as an operator would test it: ``schemathesis run --checks all`` (its CLI, configured by
tests/fuzz/schemathesis.toml), in all four phases: the documents' examples, the coverage
of each schema's edges, fuzzing with valid and invalid requests, and stateful scenarios
that chain calls through the links schemathesis infers. The pass is the CLI's: no 5xx,
no answer the document does not describe (status, media type, body, headers), no 2xx to
invalid data, no valid data refused, authentication not ignored.

``HOLDSPACE_FUZZ_EXAMPLES`` sets the examples per operation: CI runs 40 (about 2 minutes
for the five); row 20 asks for 500 (``HOLDSPACE_FUZZ_EXAMPLES=500 scripts/test
tests/fuzz``, about 15 minutes here). Requests carry a coordinator's token (an
operator's for the operators' operations), so the checks reach past authentication;
operations behind an applicant's link or a provider's signature are fuzzed up to their
refusal (their own tests drive them with real credentials).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.tokens import ALL_PROGRAMS, Role, issue_token
from shared.topology import SERVICES
from tests.conftest import short_id
from tests.integration.payments_providers import Alipay, WechatPay
from tests.services import TEST_JWT_SECRET, ServiceProcess, service_env

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("HOLDSPACE_FUZZ_EXAMPLES", "40"))
RUN_TIMEOUT_S = max(300, EXAMPLES * 6)


@pytest.fixture(scope="module")
def running(mongodb_url, rabbitmq_url, tmp_path_factory) -> Iterator[dict[str, ServiceProcess]]:
    # Payments with its providers configured, so the webhook paths are fuzzed past
    # "not configured" and into signature checking.
    providers = {**WechatPay().env(), **Alipay().env()}
    env = service_env(
        mongodb_url,
        rabbitmq_url,
        short_id(),
        GENERIC_WEBHOOK_SECRET="fuzz-generic-webhook-secret-0123456789",
        **providers,
    )
    log_dir = tmp_path_factory.mktemp("fuzz")
    processes = {name: ServiceProcess(name, env, log_dir) for name in SERVICES}
    with concurrent.futures.ThreadPoolExecutor(len(processes)) as pool:
        list(pool.map(lambda p: p.start(), processes.values()))
    yield processes
    for process in processes.values():
        process.stop()


def token(role: Role) -> str:
    # One that outlives the run (a 10-minute one would expire mid-run at 500).
    programs = ALL_PROGRAMS if role is Role.coordinator else None
    return issue_token(
        TEST_JWT_SECRET,
        role=role,
        subject="acct_fuzz",
        ttl_seconds=RUN_TIMEOUT_S + 60,
        programs=programs,
    )


def schemathesis(url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--max-examples",
        str(EXAMPLES),
        "--generation-deterministic",  # the same cases every run: a failure reproduces
        "--workers",
        "1",
        "--no-color",
    ]
    env = {
        **os.environ,
        "HOLDSPACE_FUZZ_TOKEN": token(Role.coordinator),
        "HOLDSPACE_FUZZ_OPERATOR_TOKEN": token(Role.operator),
    }
    # In its own directory: the CLI leaves a .schemathesis folder where it runs.
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def figures(output: str) -> dict[str, int]:
    """What the CLI's summary says it did."""
    found = {
        "operations": r"Operations:\s+(\d+) selected",
        "generated": r"(\d+) generated",
        "scenarios": r"Scenarios:\s+(\d+)",
        "links_covered": r"API Links:\s+(\d+) covered",
    }
    numbers = {}
    for name, pattern in found.items():
        match = re.search(pattern, output)
        numbers[name] = int(match.group(1)) if match else 0
    return numbers


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.timeout(RUN_TIMEOUT_S)  # 40 examples: under a minute a service
def test_every_check_passes_on_generated_requests(running, name: str, tmp_path: Path) -> None:
    result = schemathesis(running[name].url, tmp_path)
    output = result.stdout + result.stderr
    numbers = figures(output)
    print(f"\nschemathesis {name}: exit {result.returncode}, {numbers}")
    assert result.returncode == 0, output[-20000:]
    assert numbers["operations"] >= 3, output  # the document was read: the service's API
    # Every operation got generated requests, and scenarios chained calls.
    assert numbers["generated"] >= numbers["operations"] * min(EXAMPLES, 10), numbers
    assert numbers["scenarios"] > 0, numbers
