"""How a period is covered exactly by stored aggregate buckets and raw facts. Pure.

Aggregates are kept per UTC hour, day and month (totals), or day and month (by
dimension). A period `[start, end)` is split the way a segment tree splits a range: whole
months in the middle, whole days beside them, whole hours beside those, and what remains
at either edge (minutes in a :30 or :45 time zone or after an RFC 3339 bound such as
10:17; for a filtered read, the hours of a day cut by the period) read from the fact
rows. The pieces never overlap and together are exactly the period, so sums over them are
exact; an unfiltered month in any time zone reads a few dozen aggregate rows per metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.kpi.fold.facts import DAY, HOUR, MONTH, floor_to
from services.kpi.reads.periods import add_months


def next_bucket(at: datetime, grain: str) -> datetime:
    if grain == HOUR:
        return at + timedelta(hours=1)
    if grain == DAY:
        return at + timedelta(days=1)
    d = add_months(at.date(), 1)
    return datetime(d.year, d.month, 1, tzinfo=UTC)


def ceil_to(at: datetime, grain: str) -> datetime:
    floor = floor_to(at, grain)
    return floor if floor == at else next_bucket(floor, grain)


@dataclass
class Coverage:
    # (grain, first bucket start, end): every bucket of `grain` starting in [first, end)
    buckets: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    # [start, end) ranges read from the fact rows
    facts: list[tuple[datetime, datetime]] = field(default_factory=list)


def cover(start: datetime, end: datetime, grains: tuple[str, ...] = (HOUR, DAY, MONTH)) -> Coverage:
    """The pieces of [start, end): buckets of `grains` (finest first), then facts at the edges."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    out = Coverage()
    if start >= end:
        return out
    finest = grains[0]
    lo, hi = ceil_to(start, finest), floor_to(end, finest)
    if lo >= hi:
        out.facts.append((start, end))
        return out
    if start < lo:
        out.facts.append((start, lo))
    if hi < end:
        out.facts.append((hi, end))
    for i, grain in enumerate(grains):
        coarser = grains[i + 1] if i + 1 < len(grains) else None
        if coarser is not None:
            inner_lo, inner_hi = ceil_to(lo, coarser), floor_to(hi, coarser)
            if inner_lo < inner_hi:
                if lo < inner_lo:
                    out.buckets.append((grain, lo, inner_lo))
                if inner_hi < hi:
                    out.buckets.append((grain, inner_hi, hi))
                lo, hi = inner_lo, inner_hi
                continue
        out.buckets.append((grain, lo, hi))
        break
    return out
