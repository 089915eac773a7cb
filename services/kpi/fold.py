"""The KPI fold: what each event adds to which metric, when, and under which dimensions. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.events import Dimensions, Event, LeadReceived, LeadRouted

ROUTE_METRICS = {
    "sales": "routed_sales",
    "partner": "routed_partner",
    "nurture": "routed_nurture",
    "processing": "routed_processing",
    "rejected": "rejected",
}


@dataclass(frozen=True)
class BucketKey:
    bucket_start: datetime
    metric: str
    source: str
    channel: str
    campaign: str
    route: str
    definition_version: str


def bucket_of(at: datetime) -> datetime:
    """Hour buckets: fine enough for day boundaries in every whole-hour time zone."""
    return at.replace(minute=0, second=0, microsecond=0)


def _key(metric: str, at: datetime, dims: Dimensions) -> BucketKey:
    return BucketKey(
        bucket_start=bucket_of(at),
        metric=metric,
        source=dims.source,
        channel=dims.channel,
        campaign=dims.campaign,
        route=dims.route or "",
        definition_version="" if dims.definition_version is None else str(dims.definition_version),
    )


def increments(event: Event) -> list[tuple[BucketKey, Decimal]]:
    """What one event adds, by business time (`event.time`)."""
    if isinstance(event, LeadReceived):
        return [(_key("leads_received", event.time, event.data.dimensions()), Decimal(1))]
    if isinstance(event, LeadRouted):
        decision = event.data.decision
        dims = event.data.dimensions().model_copy(
            update={
                "route": decision.route.value,
                "definition_version": decision.definition_version,
            }
        )
        return [(_key(ROUTE_METRICS[decision.route.value], event.time, dims), Decimal(1))]
    return []


def fold(events: Iterable[Event]) -> dict[BucketKey, Decimal]:
    """Sum the increments of many events per bucket, ready for one multi-row upsert."""
    totals: dict[BucketKey, Decimal] = defaultdict(Decimal)
    for event in events:
        for key, amount in increments(event):
            totals[key] += amount
    return dict(totals)
