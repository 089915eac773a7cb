"""Exact percentiles: linear interpolation between closest ranks, found through value bins."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.durations import (
    BIN_EDGES,
    bin_of,
    locate,
    needed_ranks,
    seconds_between,
    stats,
    stats_from_ranks,
)
from services.kpi.metrics import DurationStats


def test_percentiles_interpolate_between_closest_ranks() -> None:
    # numpy.percentile([1, 2, 3, 4, 10], [50, 90]) == [3.0, 7.6]
    assert stats([Decimal(v) for v in (10, 1, 4, 2, 3)]) == DurationStats(
        Decimal(3), Decimal("7.6"), 5
    )
    assert stats([Decimal(7)]) == DurationStats(Decimal(7), Decimal(7), 1)
    assert stats([]) == DurationStats(None, None, 0)
    # Even count: the median is the mean of the middle two.
    assert stats([Decimal(v) for v in (1, 2, 3, 4)]).median == Decimal("2.5")


def test_seconds_are_exact_to_the_microsecond_and_never_negative() -> None:
    t = datetime(2026, 10, 1, tzinfo=UTC)
    assert seconds_between(t, t + timedelta(days=2, microseconds=1)) == Decimal("172800.000001")
    assert seconds_between(t, t - timedelta(hours=1)) == 0


def test_bins_grow_with_the_value() -> None:
    assert list(BIN_EDGES) == sorted(set(BIN_EDGES))
    assert (
        bin_of(Decimal(0))
        < bin_of(Decimal("1.5"))
        < bin_of(Decimal(3600))
        < bin_of(Decimal(86400 * 400))
    )
    assert bin_of(Decimal(0)) >= 1  # 0 is the bin of facts that are not durations


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=0, max_size=60))
def test_ranks_found_through_bins_give_the_direct_percentiles(micros: list[int]) -> None:
    values = [Decimal(m) / 1000 for m in micros]
    histogram = Counter(bin_of(v) for v in values)
    by_bin: dict[int, list[Decimal]] = {}
    for v in values:
        by_bin.setdefault(bin_of(v), []).append(v)
    located = locate(histogram, needed_ranks(len(values)))

    def at(rank: int) -> Decimal:
        b, index = located[rank]
        return sorted(by_bin[b])[index]

    assert stats_from_ranks(len(values), at) == stats(values)
