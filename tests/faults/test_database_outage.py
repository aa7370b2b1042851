"""Matrix row 10: the database stops answering while events are being consumed, and the
API while it is down (reliability.md §9; docs/reliability.md).

The database is a mongo-java-server process of this test's own, frozen (SIGSTOP) for
longer than the whole retry schedule: before the consumers learned to wait for it,
every event consumed meanwhile walked its attempts into the dead letters.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from shared.devinfra import EmbeddedMongo
from shared.events import Envelope
from shared.mongo import DatabaseGate, make_client
from tests.faults.harness import Tally, frozen
from tests.integration.helpers_messaging import (
    MessagingEnv,
    eventually,
    queue_counts,
    withdrawn,
)
from tests.services import ServiceProcess, service_env

WITHDRAWN = "registration.withdrawn"
OUTAGE_S = 8.0  # longer than 3 attempts of a 1 s handler timeout and their back-off


@pytest.mark.timeout(120)
async def test_events_consumed_while_the_database_is_down_wait_for_it_and_apply_once(
    env: MessagingEnv, inspect: AbstractChannel, database: EmbeddedMongo
) -> None:
    client = make_client(database.url, service="t")
    effects = client["outage"]["effects"]
    topology = env.topology(retry_delays_ms=(100, 200))
    assert topology.max_attempts == 3
    gate = DatabaseGate(client, probe_every_s=0.2)
    broker = await env.broker(topology, handler_timeout_s=1.0, gate=gate)
    calls_while_down = 0

    async def apply(envelope: Envelope) -> None:
        nonlocal calls_while_down
        calls_while_down += database_down
        try:  # the effect and its inbox entry in one write, keyed by the event
            await effects.insert_one({"_id": envelope.id})
        except DuplicateKeyError:
            pass

    database_down = False
    await broker.consume({WITHDRAWN: apply})
    tally = Tally()
    before = [withdrawn() for _ in range(10)]
    during = [withdrawn() for _ in range(20)]
    try:
        for envelope in before:
            await broker.publish(envelope)
            tally.attempt(envelope.id, acknowledged=True)
        await eventually(lambda: _count(effects, 10), what="the first 10 applied")
        assert database.process is not None
        with frozen(database.process):
            database_down = True
            for envelope in during:
                await broker.publish(envelope)
                tally.attempt(envelope.id, acknowledged=True)
            await asyncio.sleep(OUTAGE_S)
            counts = await queue_counts(inspect, [topology.dlq])
            assert counts[topology.dlq] == 0, "dead-lettered while the database was down"
            assert not gate.is_up
        healed = time.monotonic()
        database_down = False
        await eventually(lambda: _count(effects, 30), timeout=30, what="all 30 applied")
        back_after = time.monotonic() - healed
        tally.found([d["_id"] async for d in effects.find({})])
        tally.assert_valid()
        counts = await queue_counts(inspect, topology.all_queues())
        assert not any(counts.values()), counts  # nothing dead-lettered, nothing left
        assert back_after < 30
        # Bounded attempts: while it was down only the deliveries already in a handler
        # tried the database; the rest waited for the gate instead.
        assert calls_while_down <= broker.prefetch
    finally:
        await client.close()
        await gate.close()


async def _count(effects, expected: int) -> bool:
    try:
        n = await effects.count_documents({})
    except ConnectionFailure as exc:  # this test's own client, still reconnecting
        raise AssertionError(f"not readable yet: {exc}") from None
    assert n == expected, n
    return True


@pytest.mark.timeout(180)
def test_the_api_answers_503_with_retry_after_while_the_database_is_down(
    database: EmbeddedMongo, rabbitmq_url: str, run_id: str, tmp_path: Path
) -> None:
    env = service_env(database.url, rabbitmq_url, run_id, DATABASE_TIMEOUT_S="2")
    registration = ServiceProcess("registration", env, tmp_path).start()
    try:
        assert httpx.get(f"{registration.url}/cohorts", timeout=10).status_code == 200
        assert database.process is not None
        with frozen(database.process):
            started = time.monotonic()
            answer = httpx.get(f"{registration.url}/cohorts", timeout=30)
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.headers["content-type"] == "application/problem+json"
            # One read cut off by the 2 s operation timeout (the driver retries no read).
            assert took < 2 + 2, f"answered after {took:.1f}s, past the operation timeout"
        healed = httpx.get(f"{registration.url}/cohorts", timeout=10)
        assert healed.status_code == 200
        assert '"status": 500' not in registration.log_text()
    finally:
        registration.stop()


@pytest.mark.timeout(180)
def test_provider_webhooks_answer_503_with_retry_after_while_the_database_is_down(
    database: EmbeddedMongo, rabbitmq_url: str, run_id: str, tmp_path: Path
) -> None:
    """A payment notification that meets an outage is not a bug of ours (500): it is a 503
    with Retry-After, in the provider's protocol (anything but success makes it retry),
    and the same notification once the database is back is taken."""
    from tests.integration.payments_providers import Alipay, WechatPay

    wechat, alipay = WechatPay(), Alipay()
    env = service_env(
        database.url, rabbitmq_url, run_id, DATABASE_TIMEOUT_S="2", **wechat.env(), **alipay.env()
    )
    payments = ServiceProcess("payments", env, tmp_path).start()
    wechat_body = wechat.body(out_trade_no="HS-NOSUCH1", total=90000)
    alipay_form = Alipay.form(alipay.params(out_trade_no="HS-NOSUCH2", total_amount="900.00"))

    def post_both() -> tuple[httpx.Response, httpx.Response]:
        return (
            httpx.post(
                f"{payments.url}/webhooks/wechatpay",
                content=wechat_body,
                headers=wechat.headers(wechat_body),
                timeout=30,
            ),
            httpx.post(
                f"{payments.url}/webhooks/alipay",
                content=alipay_form,
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
                timeout=30,
            ),
        )

    try:
        assert database.process is not None
        with frozen(database.process):
            by_wechat, by_alipay = post_both()
        assert (by_wechat.status_code, by_wechat.json()["code"]) == (503, "FAIL")
        assert (by_alipay.status_code, by_alipay.text) == (503, "fail")
        assert by_wechat.headers["Retry-After"] == by_alipay.headers["Retry-After"] == "5"
        # The providers' retries, once it is back: taken (an unknown reference is flagged).
        by_wechat, by_alipay = post_both()
        assert (by_wechat.status_code, by_wechat.json()["code"]) == (200, "SUCCESS")
        assert (by_alipay.status_code, by_alipay.text) == (200, "success")
        log = payments.log_text()
        assert '"notification not processed: database unreachable"' in log
        assert '"notification not processed"' not in log  # the 500 path: a bug of ours
    finally:
        payments.stop()
