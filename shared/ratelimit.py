"""Rate limits on public writes, with the `limits` library (moving window, in memory).

A limit is a string such as ``"10/minute"`` (``limits.parse``); an empty string turns
it off. Counts live in the process: with several replicas each counts its own share,
so a limit is per replica (see the README's operations notes).
"""

from __future__ import annotations

import math
import time
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from shared.errors import TooMany


class RateLimits:
    def __init__(self) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def take(self, limit: str, *key: str, field: str | None = None) -> None:
        """Count one request against ``limit`` for ``key``, or refuse with TooMany."""
        if not limit:
            return
        item = parse(limit)
        if await self.limiter.hit(item, *key):
            return
        stats = await self.limiter.get_window_stats(item, *key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooMany(field, f"too many requests just now; try again in {wait} s", wait)


Networks = tuple[IPv4Network | IPv6Network, ...]


def networks(spec: str) -> Networks:
    """``"127.0.0.1,::1,172.31.240.0/24"``: addresses and networks, comma-separated."""
    return tuple(ip_network(part.strip()) for part in spec.split(",") if part.strip())


def client_address(peer: str | None, forwarded_for: str | None, trusted: Networks) -> str:
    """Who is asking: the peer, or, when the peer is a trusted proxy (the web pages),
    the last address it put in X-Forwarded-For."""
    peer = peer or "unknown"
    try:
        is_proxy = any(ip_address(peer) in net for net in trusted)
    except ValueError:
        is_proxy = False
    if is_proxy and forwarded_for:
        return forwarded_for.split(",")[-1].strip() or peer
    return peer
