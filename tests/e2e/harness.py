"""The whole of Holdspace as real processes, and the levers the journeys under faults pull.

:class:`System` starts the four services under uvicorn (``tests.services.ServiceProcess``,
started side by side) with one environment: its own topology prefix and database names
in the session's vhost, an SMTP sink (aiosmtpd, in this process), WeChat Pay keys the
tests sign notifications with, the consent service's public URL for signing links, and
the URLs the ``ops`` tool checks health at. Around it:

- an outside subscriber: a durable queue of its own bound to ``<prefix>public``
  (``enrollment.#``), as a subscribing system would have; and an internal spy, a durable
  queue bound to ``<prefix>internal`` (``#``), from which the tests read the signing
  links (consent.requested) and payment references (payment.requested) and count
  what every service published;
- the faults: stop and start the broker (``rabbitmqctl stop_app`` / ``start_app``; a
  test that stops it calls :meth:`System.start_broker` in a ``finally``), SIGKILL a
  service process and start it again on the same port, run N replicas of every
  service, and put messages straight into a service's queue (the default exchange);
- ``ops`` run as a subprocess with the system's environment, as an operator would.

Nothing is mocked: the broker, the database, SMTP and HTTP are all real.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from pymongo import AsyncMongoClient

from shared import devinfra
from shared import events as ev
from shared.messaging import build_message
from shared.settings import ServiceSettings
from shared.topology import SERVICES
from shared.wire import SEALED, open_body
from tests.conftest import short_id
from tests.integration.helpers_notifications import SmtpSink
from tests.integration.payments_providers import WechatPay
from tests.services import WIRE_CIPHER, ServiceProcess, service_env

OPS = str(Path(sys.executable).with_name("ops"))
COORDINATOR_EMAIL = "coordinators@example.org"
REPORTS = Path(__file__).resolve().parents[2] / "var" / "reports"


@dataclass
class Seen:
    """One delivery to a listener: the envelope as JSON, and whether it was a redelivery."""

    body: dict[str, Any]
    redelivered: bool
    at: float

    @property
    def id(self) -> str:
        return self.body["id"]

    @property
    def type(self) -> str:
        return self.body["type"]

    @property
    def data(self) -> dict[str, Any]:
        """The data, opened when it travelled sealed (a personal event)."""
        return open_body(self.body, WIRE_CIPHER)["data"]

    @property
    def sealed(self) -> bool:
        return SEALED in self.body


@dataclass
class Listener:
    """A durable queue of our own, bound to an exchange: it survives a broker restart and
    keeps what is published while we are disconnected, as a subscribing system's would."""

    queue_name: str
    exchange: str
    keys: tuple[str, ...]
    seen: list[Seen] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    _queue: aio_pika.abc.AbstractRobustQueue | None = None

    async def start(self, connection: aio_pika.abc.AbstractRobustConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=200)
        queue = await channel.declare_queue(self.queue_name, durable=True)
        for key in self.keys:
            await queue.bind(self.exchange, routing_key=key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.raw.append(message.body)
                self.seen.append(
                    Seen(json.loads(message.body), bool(message.redelivered), time.monotonic())
                )

        await queue.consume(on_message)
        self._queue = queue

    def of(self, event_type: str, registration_ids: set[str] | None = None) -> list[Seen]:
        return [
            s
            for s in list(self.seen)
            if s.type == event_type
            and (registration_ids is None or s.data.get("registration_id") in registration_ids)
        ]

    def latest(self, event_type: str, registration_id: str) -> Seen | None:
        found = self.of(event_type, {registration_id})
        return found[-1] if found else None

    async def delete(self) -> None:
        if self._queue is not None:
            try:
                await self._queue.delete(if_unused=False, if_empty=False)
            except Exception:  # the vhost goes at the end of the session anyway
                pass


class System:
    """The four services, one environment, an outside subscriber, a spy, an SMTP sink."""

    def __init__(
        self,
        mongodb_url: str,
        rabbitmq_url: str,
        mongo_client: AsyncMongoClient,
        log_dir: Path,
        *,
        services: tuple[str, ...] = SERVICES,
        retry_budget: str = "services",
        broker_urls: dict[str, str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """``retry_budget``: "services" (their defaults) or "tests" (tests/services.py's);
        ``broker_urls``: a service that connects to another broker node than the rest;
        ``settings``: environment variables of this test's own, for every service."""
        self.run_id = short_id()
        self.mongo = mongo_client
        self.log_dir = log_dir
        self.sink = SmtpSink()
        self.wechat = WechatPay()
        # Ports first: the consent service's public URL (signing links) names its port.
        self.processes: dict[str, list[ServiceProcess]] = {s: [] for s in services}
        ports = {s: devinfra.free_port() for s in SERVICES}
        urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
        self.env = service_env(
            mongodb_url,
            rabbitmq_url,
            self.run_id,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(self.sink.port),
            SMTP_TIMEOUT_S="5",
            COORDINATOR_EMAILS=COORDINATOR_EMAIL,
            # No quiet hours: every message goes at once, whatever the time of day.
            QUIET_HOURS_START="00:00",
            QUIET_HOURS_END="00:00",
            DELIVERY_RETRY_BASE_S="0.5",
            DELIVERY_RETRY_MAX_S="2",
            CONSENT_PUBLIC_URL=urls["consent"],
            PUBLIC_BASE_URL=urls["registration"],
            COORDINATOR_CONSOLE_URL=urls["registration"],
            PREFETCH="64",
            # An attempt interrupted (its handler cancelled: a broker disconnect, a handler
            # timeout) is tried again after this, not after the default 120 s.
            SENDING_CLAIM_S="30",
            # Where `ops status` checks health.
            REGISTRATION_URL=urls["registration"],
            CONSENT_URL=urls["consent"],
            PAYMENTS_URL=urls["payments"],
            NOTIFICATIONS_URL=urls["notifications"],
            PROGRESS_URL=urls["progress"],
            **self.wechat.env(),
            **(settings or {}),
        )
        if retry_budget == "services":
            # The services' own retry budget (5 attempts, 0.2 s doubling: about 3 s), not
            # tests/services.py's 3 attempts within 0.15 s: with that one, notifications
            # dead-letters events that overtook their registration.submitted in a
            # sign-up burst (test_sign_up_burst.py shows it).
            fields = ServiceSettings.model_fields
            self.env["MAX_ATTEMPTS"] = str(fields["max_attempts"].default)
            self.env["RETRY_BASE_MS"] = str(fields["retry_base_ms"].default)
        self.broker_urls = broker_urls or {}
        for service in services:
            self.processes[service].append(
                ServiceProcess(service, self.env_of(service), log_dir, port=ports[service])
            )
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.subscriber = Listener(
            f"{self.prefix}e2e.subscriber", f"{self.prefix}public", ("enrollment.#",)
        )
        self.spy = Listener(f"{self.prefix}e2e.spy", f"{self.prefix}internal", ("#",))
        self.http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200))

    # --- names -----------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.env["HOLDSPACE_TOPOLOGY_PREFIX"]

    def queue(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def dlq(self, service: str) -> str:
        return f"{self.prefix}{service}.dlq"

    def db(self, service: str):
        return self.mongo[f"{self.env['HOLDSPACE_DB_PREFIX']}{service}"]

    def url(self, service: str, i: int = 0) -> str:
        replicas = self.processes[service]
        return replicas[i % len(replicas)].url

    def env_of(self, service: str) -> dict[str, str]:
        if service not in self.broker_urls:
            return self.env
        return {**self.env, "RABBITMQ_URL": self.broker_urls[service]}

    def all_processes(self) -> list[ServiceProcess]:
        return [p for replicas in self.processes.values() for p in replicas]

    # --- life --------------------------------------------------------------------------

    async def start(self) -> System:
        self.sink.start()
        try:
            await asyncio.gather(*(asyncio.to_thread(p.start) for p in self.all_processes()))
        except Exception:
            self.stop_processes()
            self.sink.stop()
            raise
        self.connection = await aio_pika.connect_robust(self.env["RABBITMQ_URL"])
        await self.subscriber.start(self.connection)
        await self.spy.start(self.connection)
        return self

    def stop_processes(self) -> None:
        for p in self.all_processes():
            p.stop()

    async def close(self) -> None:
        await self.http.aclose()
        await self.subscriber.delete()
        await self.spy.delete()
        if self.connection is not None:
            await self.connection.close()
        await asyncio.to_thread(stop_all, self.all_processes())
        self.sink.stop()

    async def scale(self, replicas: int) -> None:
        """Run ``replicas`` processes of every service (new ones started side by side)."""
        starting: list[ServiceProcess] = []
        stopping: list[ServiceProcess] = []
        for service, running in self.processes.items():
            while len(running) < replicas:
                process = ServiceProcess(service, self.env_of(service), self.log_dir)
                running.append(process)
                starting.append(process)
            while len(running) > replicas:
                stopping.append(running.pop())
        await asyncio.gather(
            *(asyncio.to_thread(p.start) for p in starting),
            *(asyncio.to_thread(p.stop) for p in stopping),
        )

    async def kill(self, service: str, i: int = 0) -> None:
        """SIGKILL: no shutdown, no acks, no outbox flush; the port is freed by the kernel."""
        process = self.processes[service][i]
        await asyncio.to_thread(process.kill)
        assert process.process is not None and process.process.returncode == -9

    async def restart(self, service: str, i: int = 0) -> None:
        """Start a killed process again, on the same port (the URLs stay valid)."""
        await asyncio.to_thread(self.processes[service][i].start)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Every process ready, and back on its broker: a service without it still
        answers /readyz with 200, "degraded" (shared/app.py readiness)."""
        deadline = time.monotonic() + timeout
        for p in self.all_processes():
            while True:
                try:
                    ready = await self.http.get(f"{p.url}/readyz", timeout=2)
                    if ready.status_code == 200 and ready.json()["status"] != "degraded":
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{p.name} not ready after {timeout}s\n{p.log_tail()}")
                await asyncio.sleep(0.2)

    # --- the broker --------------------------------------------------------------------

    async def stop_broker(self) -> None:
        await _rabbitmqctl("stop_app", timeout=60)

    async def start_broker(self) -> None:
        """Start the broker's app; harmless when it runs. Always called in a ``finally``."""
        for attempt in (1, 2):
            try:
                await _rabbitmqctl("start_app", timeout=90)
                return
            except (subprocess.SubprocessError, TimeoutError):
                if attempt == 2:
                    raise

    async def broker_refuses_connections(self) -> bool:
        try:
            connection = await aio_pika.connect(self.env["RABBITMQ_URL"], timeout=2)
        except Exception:
            return True
        await connection.close()
        return False

    # --- messages straight into a queue ---------------------------------------------------

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        assert self.connection is not None
        return await self.connection.channel(publisher_confirms=True)

    async def inject_raw(self, service: str, body: bytes, message_id: str) -> None:
        """A body of our choosing into a service's queue, through the default exchange."""
        channel = await self._channel()
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=self.queue(service),
                mandatory=True,
            )
        finally:
            await channel.close()

    async def inject_event(self, service: str, data: ev.EventData) -> ev.Envelope:
        """A valid event into one service's queue only (not to every subscriber)."""
        envelope = ev.make_envelope(
            data, source="urn:holdspace:e2e", correlation_id=getattr(data, "registration_id", "")
        )
        channel = await self._channel()
        try:
            await channel.default_exchange.publish(
                build_message(envelope, cipher=WIRE_CIPHER),
                routing_key=self.queue(service),
                mandatory=True,
            )
        finally:
            await channel.close()
        return envelope

    async def queue_figures(self) -> dict[str, tuple[int, int]]:
        """(ready messages, consumers) of every service queue and DLQ, by queue name."""
        assert self.connection is not None
        channel = await self.connection.channel()
        figures = {}
        try:
            for service in SERVICES:
                for name in (self.queue(service), self.dlq(service)):
                    declared = await channel.declare_queue(name, passive=True)
                    result = declared.declaration_result
                    figures[name] = (result.message_count or 0, result.consumer_count or 0)
        finally:
            await channel.close()
        return figures

    # --- the databases ---------------------------------------------------------------------

    async def pending_outbox(self) -> dict[str, int]:
        """Events not yet published, per service, read from each service's database."""
        pending = {}
        for service in SERVICES:
            db = self.db(service)
            count = 0
            for name in await db.list_collection_names():
                async for doc in db[name].find({"has_outbox": True}, {"outbox": 1}):
                    count += len(doc.get("outbox") or [])
            pending[service] = count
        return pending

    # --- the operator's tool ------------------------------------------------------------------

    async def ops(self, *args: str, input: str | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            OPS,
            *args,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(
            process.communicate(input.encode() if input is not None else None), 120
        )
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def ops_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, out, err = await self.ops(*args, "--json")
        try:
            return code, json.loads(out)
        except ValueError:
            raise AssertionError(f"ops {' '.join(args)} exited {code}: {out}\n{err}") from None

    def logs(self) -> str:
        return "".join(p.log_text() for p in self.all_processes())

    def log_marks(self) -> dict[str, int]:
        """Where each process's log ends now (to read what comes after)."""
        return {str(p.log_path): len(p.log_text()) for p in self.all_processes()}

    def log_summary(self, marks: dict[str, int]) -> dict[str, int]:
        """Warnings and errors the services logged since ``marks``, counted by what."""
        found: Counter[str] = Counter()
        for p in self.all_processes():
            for line in p.log_text()[marks.get(str(p.log_path), 0) :].splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") not in ("warning", "error", "critical"):
                    continue
                what = str(entry.get("event", "")).split("\n")[0][:60]
                error = str(entry.get("error", "")).split(":")[0]
                found[f"{p.name}: {what}" + (f" ({error})" if error else "")] += 1
        return dict(found.most_common())


def stop_all(processes: list[ServiceProcess], grace_s: float = 5.0) -> None:
    """SIGTERM to all at once; SIGKILL for what has not ended after ``grace_s``."""
    running = [p.process for p in processes if p.process and p.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _rabbitmqctl(*args: str, timeout: float) -> None:
    await asyncio.wait_for(
        asyncio.to_thread(devinfra.rabbitmqctl, *args, timeout=timeout), timeout + 5
    )


def write_report(name: str, report: dict[str, Any]) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"e2e-{name}.json").write_text(json.dumps(report, indent=2, default=str))
