"""Queue figures: the RabbitMQ management HTTP API first, passive declarations otherwise.

The management API gives ready and unacknowledged counts, consumers and rates; it
refreshes its statistics every few seconds (``collect_statistics_interval``, 5 s by
default), so its figures can lag that much. A passive ``queue.declare`` answers at
once but knows only the ready count and the consumers. The report says which source
it used, and why it fell back.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import httpx

from shared.ops.settings import OpsSettings
from shared.topology import SERVICES

SOURCE_API = "management-api"
SOURCE_PASSIVE = "amqp-passive"


@dataclass
class QueueRef:
    service: str
    role: str  # "service", "retry" or "dlq"
    name: str


@dataclass
class QueueStats:
    service: str
    role: str
    name: str
    exists: bool
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    rate_in: float | None = None  # messages/s published into the queue
    rate_out: float | None = None  # messages/s delivered or fetched from it
    max_length: int | None = None  # the bound in force (policy or argument); API only

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueueReport:
    source: str | None  # None: neither source answered
    note: str | None
    queues: list[QueueStats]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "note": self.note,
            "items": [q.to_json() for q in self.queues],
        }


def system_queues(settings: OpsSettings) -> list[QueueRef]:
    """Every queue of the system, per shared/topology.py, with its retry steps and DLQ."""
    refs: list[QueueRef] = []
    for service in SERVICES:
        t = settings.topology(service)
        refs.append(QueueRef(service, "service", t.queue))
        refs += [
            QueueRef(service, "retry", t.retry_queue(d)) for d in sorted(set(t.retry_delays_ms))
        ]
        refs.append(QueueRef(service, "dlq", t.dlq))
    return refs


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


@dataclass(frozen=True)
class ManagementEndpoint:
    base_url: str
    username: str
    password: str
    vhost: str


def management_endpoint(settings: OpsSettings) -> ManagementEndpoint:
    """RABBITMQ_MANAGEMENT_URL, or the AMQP URL's host on port 15672; credentials from
    the management URL when it has them, else from the AMQP URL; the AMQP URL's vhost."""
    amqp = urlsplit(settings.rabbitmq_url)
    username = unquote(amqp.username or "guest")
    password = unquote(amqp.password or "guest")
    if settings.rabbitmq_management_url:
        mgmt = urlsplit(settings.rabbitmq_management_url)
        if mgmt.username:
            username, password = unquote(mgmt.username), unquote(mgmt.password or "")
        netloc = mgmt.hostname or "127.0.0.1"
        if mgmt.port:
            netloc = f"{netloc}:{mgmt.port}"
        base = urlunsplit((mgmt.scheme or "http", netloc, mgmt.path.rstrip("/"), "", ""))
    else:
        base = f"http://{amqp.hostname or '127.0.0.1'}:15672"
    return ManagementEndpoint(base, username, password, vhost_of(settings.rabbitmq_url))


def _max_length(q: dict[str, Any]) -> int | None:
    """The length bound in force: the queue's argument wins over a policy, as in RabbitMQ."""
    argument = (q.get("arguments") or {}).get("x-max-length")
    policy = (q.get("effective_policy_definition") or {}).get("max-length")
    found = argument if argument is not None else policy
    return int(found) if isinstance(found, int | float) else None


def _rate(stats: dict[str, Any], *keys: str) -> float | None:
    found = [stats[k]["rate"] for k in keys if isinstance(stats.get(k), dict)]
    return round(float(sum(found)), 3) if found else None


async def from_management_api(
    endpoint: ManagementEndpoint, refs: list[QueueRef], timeout_s: float
) -> list[QueueStats]:
    """Raises httpx.HTTPError (or HTTPStatusError) when the API is not usable."""
    url = f"{endpoint.base_url}/api/queues/{quote(endpoint.vhost, safe='')}"
    async with httpx.AsyncClient(
        auth=(endpoint.username, endpoint.password), timeout=timeout_s
    ) as client:
        response = await client.get(url)
        response.raise_for_status()
        listed = {q["name"]: q for q in response.json()}
    out = []
    for ref in refs:
        q = listed.get(ref.name)
        if q is None:
            out.append(QueueStats(ref.service, ref.role, ref.name, exists=False))
            continue
        stats = q.get("message_stats") or {}
        out.append(
            QueueStats(
                ref.service,
                ref.role,
                ref.name,
                exists=True,
                ready=q.get("messages_ready"),
                unacked=q.get("messages_unacknowledged"),
                consumers=q.get("consumers"),
                rate_in=_rate(stats, "publish_details"),
                rate_out=_rate(stats, "deliver_get_details"),
                max_length=_max_length(q),
            )
        )
    return out


async def from_passive_declarations(
    amqp_url: str, refs: list[QueueRef], timeout_s: float
) -> list[QueueStats]:
    """Ready counts and consumers only. A missing queue closes the channel: a new one then."""
    connection = await asyncio.wait_for(aio_pika.connect(amqp_url), timeout_s)
    out = []
    try:
        channel = await connection.channel()
        for ref in refs:
            try:
                queue = await channel.declare_queue(ref.name, passive=True, timeout=timeout_s)
            except aio_pika.exceptions.ChannelClosed:
                out.append(QueueStats(ref.service, ref.role, ref.name, exists=False))
                channel = await connection.channel()
                continue
            result = queue.declaration_result
            out.append(
                QueueStats(
                    ref.service,
                    ref.role,
                    ref.name,
                    exists=True,
                    ready=result.message_count,
                    consumers=result.consumer_count,
                )
            )
    finally:
        await connection.close()
    return out


async def queue_report(settings: OpsSettings, refs: list[QueueRef] | None = None) -> QueueReport:
    refs = refs if refs is not None else system_queues(settings)
    endpoint = management_endpoint(settings)
    try:
        stats = await from_management_api(endpoint, refs, settings.ops_timeout_s)
    except (httpx.HTTPError, ValueError) as exc:
        why = _describe_http_error(exc)
    else:
        note = f"{endpoint.base_url} vhost {endpoint.vhost}"
        # A queue declared since the last statistics round has no figures yet: ask it.
        blank = [q for q in stats if q.exists and (q.ready is None or q.consumers is None)]
        if blank:
            try:
                filled = await from_passive_declarations(
                    settings.rabbitmq_url,
                    [QueueRef(q.service, q.role, q.name) for q in blank],
                    settings.ops_timeout_s,
                )
            except Exception:
                pass
            else:
                by_name = {q.name: q for q in filled}
                stats = [by_name.get(q.name, q) if q in blank else q for q in stats]
                note += f"; {len(blank)} queue(s) without statistics yet read passively"
        return QueueReport(SOURCE_API, note, stats)
    try:
        stats = await from_passive_declarations(settings.rabbitmq_url, refs, settings.ops_timeout_s)
    except Exception as exc:  # the broker itself is unreachable
        return QueueReport(
            None,
            f"management API unusable ({why}); AMQP failed too ({type(exc).__name__})",
            [QueueStats(r.service, r.role, r.name, exists=False) for r in refs],
        )
    return QueueReport(
        SOURCE_PASSIVE,
        f"management API unusable ({why}): ready and consumers only, no unacked or rates",
        stats,
    )


def _describe_http_error(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
