"""Exact percentiles: linear interpolation between closest ranks, found through value bins."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.catalogue import DurationStats
from services.kpi.fold.apply import FOLD_VERSION
from services.kpi.fold.durations import (
    BIN_EDGES,
    BIN_EDGES_BY_FOLD_VERSION,
    SUBS,
    bin_and_sub,
    bin_bounds,
    bin_edges,
    bin_of,
    locate,
    needed_ranks,
    seconds_between,
    stats,
    stats_from_ranks,
    sub_of,
)


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


def test_the_current_fold_rules_bin_by_the_newest_edges() -> None:
    assert bin_edges(FOLD_VERSION) == BIN_EDGES
    assert max(BIN_EDGES_BY_FOLD_VERSION) == FOLD_VERSION
    with pytest.raises(ValueError, match="v99"):
        bin_edges(99)


@pytest.mark.parametrize("fold_version", sorted(BIN_EDGES_BY_FOLD_VERSION))
def test_every_rule_set_bins_up_to_fifty_years_within_a_smallint(fold_version: int) -> None:
    edges = bin_edges(fold_version)
    assert list(edges) == sorted(set(edges)) and edges[0] == 1
    assert edges[-1] >= 50 * 365 * 86400
    assert bin_of(Decimal(edges[-1] + 1), edges) < 2**15


def test_bins_of_the_current_rules_are_about_two_percent_wide_past_ten_minutes() -> None:
    wide = [(a, b) for a, b in itertools.pairwise(BIN_EDGES) if a >= 600]
    # Whole seconds: rounding adds up to 1/600 to the 2%.
    assert wide and all(b / a <= 1.022 for a, b in wide)
    # What made v2: v1's bins were ten times wider.
    assert len(BIN_EDGES) > 8 * len(bin_edges(1))


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


@pytest.mark.parametrize("fold_version", sorted(BIN_EDGES_BY_FOLD_VERSION))
@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 2 * 10**15), b=st.integers(0, 2 * 10**15))
def test_a_bins_parts_are_its_equal_cuts_in_order(fold_version: int, a: int, b: int) -> None:
    edges = bin_edges(fold_version)
    low, high = sorted((Decimal(a) / 10**6, Decimal(b) / 10**6))
    bin_, sub = bin_and_sub(low, edges)
    assert bin_ == bin_of(low, edges) and 0 <= sub < SUBS
    lo, hi = bin_bounds(bin_, edges)
    assert lo <= low and (hi is None or low < hi)
    if hi is None:
        assert sub == 0  # the last bin, unbounded, is one part
    else:
        # Part k holds [lo + k * width, lo + (k + 1) * width), width = (hi - lo) / SUBS.
        assert lo + sub * Decimal(hi - lo) / SUBS <= low < lo + (sub + 1) * Decimal(hi - lo) / SUBS
    # Parts sort as their values do: a larger duration is never in an earlier bin or part.
    assert bin_and_sub(low, edges) <= bin_and_sub(high, edges)


def test_a_part_starts_exactly_at_its_cut() -> None:
    bin_ = bin_of(Decimal(3600))
    lo, hi = bin_bounds(bin_)
    assert hi is not None
    micro = Decimal("0.000001")
    for k in range(SUBS):
        # (hi - lo) / 32 ends within five decimals: every cut is a stored duration.
        start = lo + k * Decimal(hi - lo) / SUBS
        assert start == start.quantize(micro)
        assert sub_of(start, bin_) == k
        if k:
            assert sub_of(start - micro, bin_) == k - 1
    assert sub_of(Decimal(hi) - micro, bin_) == SUBS - 1
    assert bin_bounds(1) == (0, 1)
    with pytest.raises(ValueError, match="no duration bin 0"):
        bin_bounds(0)
    with pytest.raises(ValueError, match="no duration bin"):
        bin_bounds(len(BIN_EDGES) + 2)
