"""Infrastructure fixtures: the real broker and a real MongoDB-wire database.

Order of choice, for each: the URL from the environment (RABBITMQ_URL,
MONGODB_URL) when set; otherwise testcontainers when a Docker engine answers;
otherwise the local RabbitMQ (started if needed) and the embedded MongoDB
(mongo-java-server, in memory) that this session starts and stops. Every session
gets its own vhost (or name prefix), and every test its own database names and
topology prefix.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from pymongo import AsyncMongoClient

from shared import devinfra
from tests import canary
from tests.integration.helpers_messaging import MessagingEnv, connect_plain

# The test harness runs the development system, and says so: the settings have no
# default environment (shared/settings.py). Tests of production set it themselves.
os.environ["HOLDSPACE_ENV"] = "development"


def short_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session", autouse=True)
def _no_canary_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Matrix row 26, for the whole session: the applicants' canary name in no log and
    no span."""
    yield
    hits = canary.in_logs(tmp_path_factory.getbasetemp())
    assert not hits, f"a personal name in logs or traces ({canary.CANARY}): {hits}"


@pytest.fixture(scope="session")
def mongodb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    if devinfra.docker_available():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7.0") as container:
            yield container.get_connection_url()
        return
    server = devinfra.EmbeddedMongo(log_dir=tmp_path_factory.mktemp("embedded-mongo")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    if url := os.environ.get("RABBITMQ_URL"):
        yield url
        return
    if devinfra.docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            params = container.get_connection_params()
            yield f"amqp://guest:guest@{params.host}:{params.port}/?heartbeat=15"
        return
    devinfra.ensure_local_rabbitmq()
    vhost = f"holdspace-test-{short_id()}"
    devinfra.create_vhost(vhost)
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}?heartbeat=5"
    finally:
        devinfra.delete_vhost(vhost)


@pytest.fixture(scope="session")
async def mongo_client(mongodb_url: str) -> AsyncIterator[AsyncMongoClient]:
    client: AsyncMongoClient = AsyncMongoClient(mongodb_url, w="majority", tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
def run_id() -> str:
    """A fresh id for names this test creates (databases, queue prefixes)."""
    return short_id()


@pytest.fixture
async def db(mongo_client: AsyncMongoClient, run_id: str):
    name = f"test_{run_id}"
    yield mongo_client[name]
    await mongo_client.drop_database(name)


# --- messaging: one test's topologies, and a channel to look into queues ---------------


@pytest.fixture
async def env(rabbitmq_url: str, run_id: str) -> AsyncIterator[MessagingEnv]:
    """Brokers and topologies under this test's prefix; all deleted afterwards."""
    messaging_env = MessagingEnv(rabbitmq_url, run_id)
    try:
        yield messaging_env
    finally:
        await messaging_env.aclose()


@pytest.fixture
async def inspect_connection(rabbitmq_url: str) -> AsyncIterator[AbstractConnection]:
    connection = await connect_plain(rabbitmq_url)
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


@pytest.fixture
async def inspect(inspect_connection: AbstractConnection) -> AbstractChannel:
    """A separate plain channel to look into queues (never the brokers' own)."""
    return await inspect_connection.channel()
