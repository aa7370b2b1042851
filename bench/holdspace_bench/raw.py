"""The machine's raw limits, measured in the same run as the pipeline.

- Broker: aio-pika publishing to a quorum queue with publisher confirms, persistent
  and mandatory, messages the size of Holdspace's events; batched (a window of
  confirms in flight) and one at a time; then consuming with manual acks at the
  prefetch the services use.
- Database: PyMongo's AsyncMongoClient with the services' client settings
  (``shared/mongo.make_client``), against the database the services use (the embedded
  MongoDB's file store, which journals each write before acknowledging it): inserts of
  registration-sized documents, the compare-and-set an aggregate write is (filter
  ``{_id, version}``, ``$set`` of the next version with ``$inc`` of the seats), finds
  and deletes by ``_id``.
- HTTP: a FastAPI endpoint that does nothing under uvicorn with the services' command
  line, driven closed-loop by aiohttp from this process.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from holdspace_bench import payloads
from holdspace_bench.system import Proc, spawn, wait_ready
from shared import devinfra, devrun, mongo
from shared.settings import ServiceSettings

SERVICE_PREFETCH = ServiceSettings.model_fields["prefetch"].default


async def _for_duration(
    op: Callable[[int], Awaitable[Any]], *, workers: int, duration_s: float
) -> tuple[int, float]:
    """Run ``op`` from ``workers`` loops for ``duration_s``; returns (ops done, seconds)."""
    done = 0
    stop_at = time.perf_counter() + duration_s
    counter = iter(range(10**12))

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await op(next(counter))
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    return done, time.perf_counter() - started


def _rate(done: int, seconds: float) -> float:
    return round(done / seconds, 1) if seconds > 0 else 0.0


# --- broker ---------------------------------------------------------------------------


async def broker_limits(
    url: str, prefix: str, *, messages: int, window: int = 128, serial_s: float = 2.0
) -> dict[str, Any]:
    bodies = payloads.sample_bodies()
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        name = f"{prefix}bench.raw.{secrets.token_hex(3)}"
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        exchange = channel.default_exchange

        def message(i: int) -> aio_pika.Message:
            return aio_pika.Message(
                bodies[i % len(bodies)],
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(uuid.uuid4()),
                type="bench.raw",
            )

        gate = asyncio.Semaphore(window)

        async def publish(i: int) -> None:
            async with gate:
                await exchange.publish(message(i), routing_key=name, mandatory=True, timeout=30)

        started = time.perf_counter()
        await asyncio.gather(*(publish(i) for i in range(messages)))
        batched_s = time.perf_counter() - started

        async def one(i: int) -> None:
            await exchange.publish(message(i), routing_key=name, mandatory=True, timeout=30)

        serial_done, serial_took = await _for_duration(one, workers=1, duration_s=serial_s)

        total = messages + serial_done
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=SERVICE_PREFETCH)
        consume_queue = await consume_channel.get_queue(name)
        received = 0
        finished = asyncio.get_running_loop().create_future()

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await msg.ack()
            received += 1
            if received >= total and not finished.done():
                finished.set_result(None)

        started = time.perf_counter()
        tag = await consume_queue.consume(on_message)
        await asyncio.wait_for(finished, timeout=max(60.0, total / 200))
        consume_s = time.perf_counter() - started
        await consume_queue.cancel(tag)
        await consume_channel.close()
        await channel.queue_delete(name)
    finally:
        await connection.close()
    return {
        "message_bytes_median": sorted(len(b) for b in bodies)[len(bodies) // 2],
        "publish_batched_per_s": _rate(messages, batched_s),
        "publish_window": window,
        "publish_serial_per_s": _rate(serial_done, serial_took),
        "consume_per_s": _rate(total, consume_s),
        "consume_prefetch": SERVICE_PREFETCH,
        "messages": total,
    }


# --- database -------------------------------------------------------------------------


def _registration_like(i: int) -> dict[str, Any]:
    sealed = {
        k: secrets.token_urlsafe(n) for k, n in (("name", 48), ("email", 64), ("chat_handle", 48))
    }
    return {
        "_id": str(uuid.uuid4()),
        "cohort_id": str(uuid.uuid4()),
        "program_id": str(uuid.uuid4()),
        "dedupe_key": secrets.token_hex(32),
        "email_index": secrets.token_hex(32),
        "sealed": sealed,
        "safety_answers": secrets.token_urlsafe(64),
        "age_attested": True,
        "flagged": False,
        "language": "en",
        "timezone": "Asia/Shanghai",
        "access_token_hash": secrets.token_hex(32),
        "n": i,
    }


async def database_limits(
    url: str,
    db_name: str,
    *,
    duration_s: float,
    workers: int = 32,
    hot_docs: int = 16,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    if warmup_s > 0:
        # The same sequence, unmeasured, on a database of its own: the embedded server is
        # a JVM that compiles its hot paths in its first seconds, and measured cold it
        # looked several times slower than it is (65 against 640 inserts/s here).
        await database_limits(
            url, f"{db_name}_warmup", duration_s=warmup_s, workers=workers, hot_docs=hot_docs
        )
    client = mongo.make_client(url, service="bench")
    db = client[db_name]
    try:
        await mongo.wait_until_reachable(client)
        docs = db["raw_inserts"]
        inserted: list[str] = []

        async def insert(i: int) -> None:
            doc = _registration_like(i)
            await docs.insert_one(doc)
            inserted.append(doc["_id"])

        ins_done, ins_s = await _for_duration(insert, workers=workers, duration_s=duration_s)

        async def find(i: int) -> None:
            found = await docs.find_one({"_id": inserted[i % len(inserted)]})
            assert found is not None

        find_done, find_s = await _for_duration(find, workers=workers, duration_s=duration_s)

        cohorts = db["raw_cohorts"]
        for k in range(hot_docs):
            await cohorts.insert_one({"_id": f"c{k}", "version": 0, "seats_taken": 0})
        missed = 0

        # One writer per document: every compare-and-set should match (a miss would be a
        # lost write), and the rate is that of uncontended writes; what contention costs
        # is in the journey's figures.
        async def hold_loop(k: int, stop_at: float, counts: list[int]) -> None:
            nonlocal missed
            version = 0
            while time.perf_counter() < stop_at:
                res = await cohorts.update_one(
                    {"_id": f"c{k}", "version": version},
                    {"$set": {"version": version + 1}, "$inc": {"seats_taken": 1}},
                )
                missed += res.modified_count != 1
                version += res.modified_count
                counts[k] += 1

        counts = [0] * hot_docs
        started = time.perf_counter()
        stop_at = started + duration_s
        await asyncio.gather(*(hold_loop(k, stop_at, counts) for k in range(hot_docs)))
        upd_s = time.perf_counter() - started
        upd_done = sum(counts)

        gate = asyncio.Semaphore(workers)

        async def delete(doc_id: str) -> None:
            async with gate:
                await docs.delete_one({"_id": doc_id})

        started = time.perf_counter()
        await asyncio.gather(*(delete(d) for d in inserted))
        del_done, del_s = len(inserted), time.perf_counter() - started
    finally:
        await client.drop_database(db_name)
        await client.close()
    return {
        "insert_per_s": _rate(ins_done, ins_s),
        "find_by_id_per_s": _rate(find_done, find_s),
        "conditional_update_per_s": _rate(upd_done, upd_s),
        "conditional_update_missed": missed,
        "delete_by_id_per_s": _rate(del_done, del_s),
        "workers": workers,
        "hot_documents": hot_docs,
        "warmup_s": warmup_s,
        "document_bytes": len(json.dumps(_registration_like(0))),
    }


# --- HTTP -----------------------------------------------------------------------------


def noop_command(port: int) -> str:
    """The services' command line (shared/devrun.build_plan) for the noop app."""
    environ = {"MONGODB_URL": "mongodb://127.0.0.1:1/", "REGISTRATION_PORT": str(port)}
    plan = devrun.build_plan(environ, python=sys.executable)
    command = plan.processes["registration"]
    assert command.endswith(" -m registration")
    return command.removesuffix("registration") + "holdspace_bench.noop_app"


async def http_limits(log_dir: Path, *, duration_s: float, workers: int = 32) -> dict[str, Any]:
    port = devinfra.free_port()
    command = noop_command(port)
    proc: Proc = spawn("noop-http", command, {**_env(), "PYTHONUNBUFFERED": "1"}, log_dir)
    proc.url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_ready, [proc], 60.0)
        body = json.dumps(payloads.application("noop", 1)).encode()
        connector = aiohttp.TCPConnector(limit=workers)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"{proc.url}/noop"
            headers = {"Content-Type": "application/json"}

            async def post(_: int) -> None:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 200

            await _for_duration(post, workers=workers, duration_s=min(0.5, duration_s))  # warm
            done, took = await _for_duration(post, workers=workers, duration_s=duration_s)
    finally:
        proc.stop()
    return {
        "noop_requests_per_s": _rate(done, took),
        "client": f"aiohttp, {workers} connections, closed loop, this process",
        "command": command,
    }


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
