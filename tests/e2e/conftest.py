"""One running system for the journeys of this directory (each journey has its own cohort).

The faults (a broker restart, a killed process, poison messages, more replicas) leave
the system running and recovered; each journey then checks the system drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from consent import seed as consent_seed

from tests.e2e.harness import System
from tests.e2e.journey import create_program
from tests.e2e.traces import FAST_EXPORT
from tests.services import coordinator_headers


@pytest.fixture(scope="module")
async def system(
    mongodb_url, rabbitmq_url, mongo_client, tmp_path_factory
) -> AsyncIterator[System]:
    log_dir = tmp_path_factory.mktemp("e2e")
    # Every service's spans, exported within a fifth of a second (test_tracing.py reads them).
    traces = {"TRACE_FILE": str(log_dir / "traces" / "{service}.jsonl"), **FAST_EXPORT}
    s = System(mongodb_url, rabbitmq_url, mongo_client, log_dir, settings=traces)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
async def program_id(system: System) -> str:
    """The recovery group in registration, its consent form published in consent."""

    def seed_forms() -> list[str]:
        with httpx.Client(
            base_url=system.url("consent"), headers=coordinator_headers(), timeout=30
        ) as client:
            return consent_seed.seed(client)

    created = await asyncio.to_thread(seed_forms)
    assert "recovery-group-consent.en" in created
    return await create_program(system)
