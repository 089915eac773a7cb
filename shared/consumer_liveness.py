"""How a consumer loop is doing: what /readyz reads, and its gauges on /metrics."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Gauge

SECONDS_SINCE_POLL = Gauge(
    "leadflow_consumer_seconds_since_poll",
    "Seconds since the consumer last polled with success (found nothing new, or applied "
    "what it fetched); a consumer retrying a batch is not polling",
    ["service"],
)
PARTITIONS_ASSIGNED = Gauge(
    "leadflow_consumer_partitions_assigned", "Partitions assigned to the consumer", ["service"]
)
CONSUMER_LAG = Gauge(
    "leadflow_consumer_lag",
    "Records on the assigned partitions not yet applied (NaN while unknown)",
    ["service"],
)


@dataclass(frozen=True)
class ConsumerLiveness:
    """How a consumer is doing, for /readyz and /metrics."""

    name: str
    # Since it last polled with success: found nothing new, or applied what it fetched.
    seconds_since_poll: float
    partitions_assigned: int
    # Records on its partitions not yet applied, where Kafka told it their end (None: unknown).
    lag: int | None


class ReportsLiveness(Protocol):
    def liveness(self) -> ConsumerLiveness: ...


def export_liveness(service: str, loop: ReportsLiveness) -> None:
    """The loop's liveness as gauges of its service, read when /metrics is scraped (the last
    loop made for a service; a weak reference, so a stopped service's loop can go)."""
    ref = weakref.ref(loop)

    def read(field: Callable[[ConsumerLiveness], float | None]) -> Callable[[], float]:
        def value() -> float:
            current = ref()
            found = field(current.liveness()) if current is not None else None
            return math.nan if found is None else float(found)

        return value

    SECONDS_SINCE_POLL.labels(service).set_function(read(lambda c: c.seconds_since_poll))
    PARTITIONS_ASSIGNED.labels(service).set_function(read(lambda c: c.partitions_assigned))
    CONSUMER_LAG.labels(service).set_function(read(lambda c: c.lag))
