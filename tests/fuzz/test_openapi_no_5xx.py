"""Schemathesis against each service's OpenAPI document: no input makes a 5xx.

Each service runs as a real process against the real broker and database. Every
operation of its document gets generated requests (valid and invalid bodies,
parameters and headers), sent with a coordinator's token so the checks reach past
authentication; any answer of 500 or more fails the test.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from shared.topology import SERVICES
from tests.conftest import short_id
from tests.integration.payments_providers import Alipay, WechatPay
from tests.services import ServiceProcess, coordinator_headers, service_env

EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure is reproducible
    suppress_health_check=list(HealthCheck),
)


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


def fuzz(running: dict[str, ServiceProcess], name: str) -> int:
    """Every operation of the service's document, EXAMPLES cases each; returns the count.

    Hypothesis drives schemathesis' strategies directly: schemathesis' own pytest
    plugin does not load under this pytest version.
    """
    url = running[name].url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = coordinator_headers()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @EXAMPLES
        def no_server_error(case) -> None:
            response = case.call(base_url=url, headers=headers, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} answered {response.status_code}: "
                f"{response.text[:300]}\nreproduce: {case.as_curl_command()}"
            )

        no_server_error()
    return operations


@pytest.mark.parametrize("name", SERVICES)
def test_no_generated_request_gets_a_5xx(running, name: str) -> None:
    operations = fuzz(running, name)
    assert operations >= 3  # the document was read and has the service's API in it
