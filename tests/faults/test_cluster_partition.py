"""Matrix row 4: a three-node RabbitMQ cluster with one node partitioned away for 30 s
while people sign up (reliability.md §9; docs/reliability.md).

The cluster is tests/faults/cluster.py's: three nodes on their own loopback addresses,
``pause_minority``, quorum-queue leaders spread over the nodes. Registration (the API and
its outbox relay) connects to the first node; notifications, which sends the e-mail a
sign-up causes, connects to the third, the one cut off. So the partition takes away the
leaders of the queues that lived on that node (the majority must elect new ones while
publishes wait for their confirms) and the consumer's own node (it pauses, closing its
connection with deliveries unacknowledged, and comes back when the partition heals).

Scored with the Jepsen tally: a sign-up is attempted by its key (the address's local
part), acknowledged when answered 202; its effect is the verification e-mail. Pass: lost
0, unexpected 0, duplicated 0 (each applicant one verification e-mail and one receipt);
sign-ups answered 202 for at least 99% of attempts; every queue drained and nothing
dead-lettered after healing. Redeliveries (transport duplicates) are reported, not failed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.conftest import short_id
from tests.e2e.harness import System, write_report
from tests.e2e.journey import Journey, create_program
from tests.faults.cluster import ClusterUnavailable, RabbitCluster
from tests.faults.harness import Tally, sign_up_body
from tests.integration.helpers_messaging import eventually

RATE_PER_S = 5
LOAD_S = 75
PARTITION_AT_S = 15
PARTITION_S = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    try:
        c = RabbitCluster(tmp_path_factory.mktemp("cluster"), short_id()[:6])
    except ClusterUnavailable as why:
        pytest.fail(f"row 4 needs a cluster this machine cannot run: {why}")
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
async def system(
    cluster: RabbitCluster, mongodb_url, mongo_client, tmp_path_factory
) -> AsyncIterator[System]:
    first, _, cut_off = cluster.nodes
    s = System(
        mongodb_url,
        first.url,
        mongo_client,
        tmp_path_factory.mktemp("e2e-cluster"),
        services=("registration", "notifications"),
        broker_urls={"notifications": cut_off.url},
    )
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def _mail(system: System, template: str) -> Counter[str]:
    """How many e-mails of ``template`` each address got, by its local part (the key)."""
    with system.sink.lock:
        received = list(system.sink.received)
    return Counter(
        to.split("@")[0] for r in received if r.template == template for to in r.rcpt_tos
    )


def _redeliveries(metrics_text: str) -> int:
    found = re.findall(
        r"^holdspace_events_redelivered_total\{[^}]*\} ([0-9.e+]+)$", metrics_text, re.M
    )
    return int(sum(float(v) for v in found))


@pytest.mark.faults
@pytest.mark.timeout(900)
async def test_a_partitioned_minority_node_loses_no_sign_up_and_no_message(
    cluster: RabbitCluster, system: System
) -> None:
    first, _, cut_off = cluster.nodes
    journey = Journey(system, await create_program(system), "partition")
    await journey.open_cohort()
    ours = {name for name, node in cluster.leaders(first).items() if name.startswith(system.prefix)}
    on_cut_off = sorted(
        q for q, node in cluster.leaders(first).items() if q in ours and node == cut_off.name
    )
    assert on_cut_off, f"no queue leader on {cut_off.name}: the partition would test little"

    tally = Tally()
    statuses: Counter[int] = Counter()
    took: list[float] = []
    notes: dict[str, object] = {"queue_leaders_on_the_cut_off_node": len(on_cut_off)}
    url = f"{system.url('registration')}/cohorts/{journey.cohort_id}/registrations"

    async def sign_up(n: int) -> None:
        key = f"part-{journey.tag}-{n:04d}"
        began = time.monotonic()
        try:
            answer = await system.http.post(
                url, json=sign_up_body(key, "Partition"), headers={"Idempotency-Key": key}
            )
            status = answer.status_code
        except httpx.TransportError:
            status = 0
        took.append(time.monotonic() - began)
        statuses[status] += 1
        tally.attempt(key, acknowledged=status == 202)

    async def partition() -> None:
        await asyncio.sleep(PARTITION_AT_S)
        cluster.partition(cut_off)
        began = time.monotonic()
        try:
            await eventually(
                lambda: not cluster.accepts_amqp(cut_off),
                timeout=PARTITION_S,
                what="the minority node paused",
            )
            notes["minority_paused_after_s"] = round(time.monotonic() - began, 1)

            # The majority notices on its own clock (net_ticktime), often a little later.
            def majority_lost_it() -> bool:
                return cut_off.name not in cluster.running_nodes(first)

            await eventually(
                lambda: asyncio.to_thread(majority_lost_it),
                timeout=max(1.0, PARTITION_S - (time.monotonic() - began)),
                interval=0.5,
                what="the majority seeing the minority gone",
            )
            notes["majority_lost_it_after_s"] = round(time.monotonic() - began, 1)
            await asyncio.sleep(max(0.0, PARTITION_S - (time.monotonic() - began)))
        finally:
            cluster.heal()
        notes["healed_at"] = time.monotonic()

    fault = asyncio.create_task(partition())
    sign_ups = []
    for n in range(RATE_PER_S * LOAD_S):
        sign_ups.append(asyncio.create_task(sign_up(n)))
        await asyncio.sleep(1 / RATE_PER_S)
    await asyncio.gather(*sign_ups, fault)
    healed_at = float(notes.pop("healed_at"))  # type: ignore[arg-type]

    async def all_told() -> bool:
        told = _mail(system, "verify_email")
        missing = len(tally.acknowledged - set(told))
        assert missing == 0, f"{missing} applicants not yet told"
        return True

    await eventually(all_told, timeout=180, interval=1, what="every applicant's e-mail")
    notes["all_told_after_heal_s"] = round(time.monotonic() - healed_at, 1)

    async def drained() -> bool:
        figures = await system.queue_figures()
        assert not any(ready for ready, _ in figures.values()), figures
        return True

    await eventually(drained, timeout=60, interval=1, what="every queue drained")
    receipts = _mail(system, "signup_received")
    tally.found(_mail(system, "verify_email").elements())
    notes["statuses"] = dict(statuses)
    notes["sign_up_p99_s"] = round(sorted(took)[int(len(took) * 0.99) - 1], 3)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{system.url('notifications')}/metrics")).text
    notes["redeliveries_to_notifications"] = _redeliveries(metrics)
    write_report("cluster-partition", {"fault": notes, "tally": tally.score()})
    print(f"row 4: {notes} tally {tally.score()}")

    tally.assert_valid()
    assert max(receipts.values(), default=0) <= 1, receipts.most_common(3)
    availability = statuses[202] / sum(statuses.values())
    assert availability >= 0.99, notes
