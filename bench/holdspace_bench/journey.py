"""The full journey of one applicant, driven over the services' public interfaces.

sign-up (registration) -> coordinator approval (registration, bearer token) ->
consent.requested carries the signing link (seen on the internal exchange by the
benchmark's own queue) -> the form is fetched and signed (consent) ->
payment.requested carries the reference and amount (internal exchange) -> a WeChat Pay
API v3 notification signed with the platform key (payments' webhook) ->
enrollment.confirmed seen by an outside subscriber bound to the public exchange.

Latency runs from the intended start of the journey to the moment the subscriber
receives enrollment.confirmed. Signing links are held in memory only, never written.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp

from holdspace_bench import load, payloads, stats
from holdspace_bench.load import coordinator_headers, open_loop
from holdspace_bench.system import System
from shared.security import FieldCipher
from shared.settings import ServiceSettings
from shared.wire import UnreadableBody, open_body

VERIFY = "registration.email_verification_requested"
WATCHED_INTERNAL = (VERIFY, "consent.requested", "payment.requested")
CONFIRMED = "enrollment.confirmed"


class Observer:
    """The benchmark's own queues: one on the internal exchange (the events that carry
    what an applicant gets by message), one on the public exchange (an outside subscriber)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.futures: dict[tuple[str, str], asyncio.Future] = {}
        self.received_at: dict[str, float] = {}
        self.seen = 0
        # The services' key: the events that carry a link travel sealed (shared/wire.py).
        fields = ServiceSettings.model_fields
        given = {k.lower(): v for k, v in system.env.items() if k.lower() in fields}
        self.cipher = FieldCipher.from_settings(ServiceSettings(**given))

    def _future(self, event_type: str, rid: str) -> asyncio.Future:
        key = (event_type, rid)
        if key not in self.futures:
            self.futures[key] = asyncio.get_running_loop().create_future()
        return self.futures[key]

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.system.rabbitmq_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=500)
        prefix = self.system.prefix
        internal = await channel.declare_queue(exclusive=True)
        for key in WATCHED_INTERNAL:
            await internal.bind(f"{prefix}internal", routing_key=key)
        public = await channel.declare_queue(exclusive=True)
        await public.bind(f"{prefix}public", routing_key=CONFIRMED)
        await internal.consume(self._on_message)
        await public.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived = time.monotonic()
        try:
            envelope = open_body(json.loads(message.body), self.cipher)
            event_type = envelope["type"]
            data = envelope["data"]
            # The verification link is waited for by address: a sign-up's answer has no id.
            rid = data["contact"]["email"] if event_type == VERIFY else data["registration_id"]
        except (ValueError, KeyError, TypeError, UnreadableBody):
            await message.ack()
            return
        self.seen += 1
        if event_type == CONFIRMED:
            self.received_at.setdefault(rid, arrived)
        future = self._future(event_type, rid)
        if not future.done():
            future.set_result(envelope["data"])
        await message.ack()

    async def wait(self, event_type: str, rid: str, timeout_s: float) -> dict[str, Any]:
        future = self._future(event_type, rid)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        finally:
            if future.done():
                self.futures.pop((event_type, rid), None)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


class JourneyFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step


@dataclass
class Journeys:
    """What every journey of one phase did."""

    latencies: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    started: int = 0
    # Requests answered 503 with Retry-After (admission control) and sent again.
    refused: int = 0

    def step(self, name: str, seconds: float) -> None:
        self.steps.setdefault(name, []).append(seconds)

    def fail(self, step: str) -> None:
        self.failures[step] = self.failures.get(step, 0) + 1

    def summary(self) -> dict[str, Any]:
        failed = sum(self.failures.values())
        return {
            "started": self.started,
            "confirmed": len(self.latencies),
            "failed": failed,
            "failures": self.failures,
            "refused_then_retried": self.refused,
            "latency": stats.latency_summary(self.latencies, failed=failed),
            "step_median_ms": {
                name: round((stats.percentile(values, 50) or 0) * 1000, 2)
                for name, values in self.steps.items()
            },
        }


class Driver:
    def __init__(
        self,
        system: System,
        session: aiohttp.ClientSession,
        observer: Observer,
        wechat: payloads.WechatPay,
        *,
        event_timeout_s: float,
    ) -> None:
        self.system = system
        self.session = session
        self.observer = observer
        self.wechat = wechat
        self.event_timeout_s = event_timeout_s
        self.coordinator = coordinator_headers(system)
        self.registration = system.url("registration")
        self.consent = system.url("consent")
        self.payments = system.url("payments")

    async def _request(
        self, out: Journeys, step: str, method: str, url: str, **kwargs: Any
    ) -> dict[str, Any]:
        status, text, refused = await load.send(self.session, method, url, **kwargs)
        out.refused += refused
        if status >= 300:
            raise JourneyFailed(step, f"HTTP {status}")
        return json.loads(text) if text else {}

    async def _wait(self, step: str, event_type: str, rid: str) -> dict[str, Any]:
        try:
            return await self.observer.wait(event_type, rid, self.event_timeout_s)
        except TimeoutError:
            raise JourneyFailed(step, f"no {event_type} in {self.event_timeout_s:.0f} s") from None

    async def one(self, out: Journeys, tag: str, i: int, cohort_id: str, intended: float) -> None:
        """One applicant from sign-up to enrollment.confirmed; ``intended`` is monotonic."""
        out.started += 1
        mark = intended
        try:
            application = payloads.application(tag, i)
            await self._request(
                out,
                "sign_up",
                "POST",
                f"{self.registration}/cohorts/{cohort_id}/registrations",
                json=application,
                headers={"Idempotency-Key": f"{tag}-{i}"},
            )
            mark = self._lap(out, "sign_up", mark)
            link = await self._wait("verify_link", VERIFY, application["email"])
            rid, token = link["registration_id"], link["contact"]["access_token"]
            mark = self._lap(out, "wait_verify_link", mark)
            answer = await self._request(
                out,
                "verify",
                "POST",
                f"{self.registration}/registrations/{rid}/verify-email",
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.get("status") != "pending_review":
                raise JourneyFailed("verify", f"status {answer.get('status')}")
            mark = self._lap(out, "verify", mark)
            await self._request(
                out,
                "approve",
                "POST",
                f"{self.registration}/registrations/{rid}/approve",
                headers=self.coordinator,
            )
            mark = self._lap(out, "approve", mark)
            requested = await self._wait("consent_requested", "consent.requested", rid)
            mark = self._lap(out, "wait_consent_requested", mark)
            token = requested["signing_url"].rsplit("/", 1)[1]
            got = await self._request(
                out, "consent_form", "GET", f"{self.consent}/consents/{token}"
            )
            form = got["form"]
            mark = self._lap(out, "consent_form", mark)
            await self._request(
                out,
                "sign",
                "POST",
                f"{self.consent}/consents/{token}/sign",
                json={
                    "text_sha256": form["text_sha256"],
                    "typed_name": f"Applicant {i}",
                    "acknowledged_clauses": [c["id"] for c in form["clauses"]],
                    "agree_to_sign_electronically": True,
                },
                headers={"User-Agent": "holdspace-bench"},
            )
            mark = self._lap(out, "sign", mark)
            payment = await self._wait("payment_requested", "payment.requested", rid)
            mark = self._lap(out, "wait_payment_requested", mark)
            body, headers = self.wechat.notification(
                out_trade_no=payment["reference"],
                total=payment["amount"]["amount_minor"],
                currency=payment["amount"]["currency"],
            )
            await self._request(
                out,
                "webhook",
                "POST",
                f"{self.payments}/webhooks/wechatpay",
                data=body,
                headers=headers,
            )
            mark = self._lap(out, "webhook", mark)
            await self._wait("enrollment_confirmed", CONFIRMED, rid)
            done = self.observer.received_at.get(rid, time.monotonic())
            out.step("wait_enrollment_confirmed", done - mark)
        except JourneyFailed as exc:
            out.fail(exc.step)
            return
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            out.fail(f"error:{type(exc).__name__}")
            return
        out.latencies.append(done - intended)
        out.completions.append(done)

    @staticmethod
    def _lap(out: Journeys, name: str, since: float) -> float:
        now = time.monotonic()
        out.step(name, now - since)
        return now


async def as_fast_as_possible(
    driver: Driver, cohorts: list[str], *, n: int, concurrency: int, tag: str
) -> tuple[Journeys, float, float]:
    """N journeys, ``concurrency`` at a time (closed loop): returns journeys, start, end."""
    out = Journeys()
    next_index = iter(range(n))
    started = time.monotonic()

    async def worker() -> None:
        for i in next_index:
            await driver.one(out, tag, i, cohorts[i % len(cohorts)], time.monotonic())

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return out, started, time.monotonic()


async def at_rate(
    driver: Driver,
    cohorts: list[str],
    *,
    rate_per_s: float,
    duration_s: float,
    tag: str,
    grace_s: float | None = None,
) -> tuple[Journeys, float, dict[str, Any]]:
    """Journeys started open-loop at ``rate_per_s`` (their latency counts from the schedule)."""
    out = Journeys()
    loop = asyncio.get_running_loop()

    async def send(i: int, intended: float) -> str | None:
        # open_loop's clock is the loop's; the journey's is time.monotonic(): same source
        # on Linux, but convert explicitly so a different loop clock cannot skew it.
        intended_mono = time.monotonic() - (loop.time() - intended)
        await driver.one(out, tag, i, cohorts[i % len(cohorts)], intended_mono)
        return None

    result = await open_loop(rate_per_s, duration_s, send, grace_s=grace_s)
    unfinished = result.error_kinds.get("unfinished", 0)
    if unfinished:
        out.failures["unfinished"] = unfinished
    lag = stats.percentile(result.send_lag_s, 99)
    return (
        out,
        result.started_at,
        {"send_lag_p99_ms": None if lag is None else round(lag * 1000, 2)},
    )
