"""Token buckets in process memory, for the public form endpoint.

Each replica counts on its own: with N replicas behind a load balancer a client gets up
to N times the configured rate. That bounds abuse without a shared store; a limit that
must hold cluster-wide belongs in the load balancer or a shared counter.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Buckets of `burst` tokens refilled at `per_minute`, one per key (a client IP, a form).

    Memory is bounded: past `max_keys` the least recently used bucket is dropped. The
    dropped ones are the idle ones, which have refilled, so forgetting them lets no one
    through who would otherwise wait.
    """

    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(
        self, key: str, *, per_minute: float | None = None, burst: int | None = None
    ) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one will be there.

        `per_minute`/`burst` override the defaults for this key (a form's own limit).
        """
        rate = per_minute / 60.0 if per_minute else self.rate
        capacity = burst or self.burst
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(capacity), updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


def client_key(host: str) -> str:
    """The bucket key of a client address: an IPv4 address, or an IPv6 address's /64.

    An IPv6 client commonly holds a whole /64 (SLAAC, privacy addresses, a /64 per
    subscriber), so keyed by address it could take a fresh bucket for every post.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an address (a test client's name, a Unix socket): as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
