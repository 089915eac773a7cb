"""Durations: seconds between two business times, value bins, and exact percentiles. Pure.

Percentiles are exact ("linear interpolation between closest ranks", as numpy's
default and Excel's PERCENTILE.INC), yet a period's answer must not read every
duration of the period. So each duration also lands in a value bin, and aggregates
count durations per bin: the counts tell which bins hold the ranks a percentile
needs, and only those bins' durations are read back, in order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from services.kpi.catalogue import DurationStats

QUANTILES: dict[str, Decimal] = {"median": Decimal("0.5"), "p90": Decimal("0.9")}

NOT_A_DURATION = 0  # the bin of every non-duration fact


def geometric_edges(ratio: float, steps: int) -> tuple[int, ...]:
    """Bin edges in whole seconds, `ratio` apart, from 1 s up."""
    return tuple(sorted({round(ratio**k) for k in range(steps)}))


# A generation's bins are fixed by the fold rules it was built with (services/kpi/fold/apply.py
# FOLD_VERSION): percentiles rank bins by number, so one generation must never mix two
# sets. Both reach 58 years. Version 1's bins were 20% wide; at a million leads a period's
# median bin held tens of thousands of durations, all read to find one. Version 2's are 2%
# wide: ten times fewer reads, 931 bins (a SmallInteger), a few more aggregate rows.
BIN_EDGES_BY_FOLD_VERSION: dict[int, tuple[int, ...]] = {
    1: geometric_edges(1.2, 118),
    2: geometric_edges(1.02, 1080),
}
# The current rules' bins (fold/apply.py FOLD_VERSION, checked by a test).
BIN_EDGES: tuple[int, ...] = BIN_EDGES_BY_FOLD_VERSION[max(BIN_EDGES_BY_FOLD_VERSION)]


def bin_edges(fold_version: int) -> tuple[int, ...]:
    try:
        return BIN_EDGES_BY_FOLD_VERSION[fold_version]
    except KeyError:
        raise ValueError(f"no value bins for fold rules v{fold_version}") from None


def seconds_between(start: datetime, end: datetime) -> Decimal:
    """Exact seconds (microsecond resolution); a closing event before its start counts as 0."""
    delta = end - start
    seconds = Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6
    return max(seconds, Decimal(0))


def bin_of(seconds: Decimal, edges: tuple[int, ...] = BIN_EDGES) -> int:
    return 1 + bisect.bisect_right(edges, seconds)


# Each bin is cut in SUBS equal parts of its seconds: a percentile whose rank falls in a bin
# reads the one part that holds it (reads/stored.duration_values), found by per-day and
# per-month counts of each part (kpi_fine_counts). At ten million leads a quarter's 2% bin
# holds some 60,000 durations, too many to read for one rank. Not a fold rule: a part is a
# function of the seconds and the bin's edges, the same for every fold version (migration
# 0007 gave existing facts theirs).
SUBS = 32


def bin_bounds(bin_: int, edges: tuple[int, ...] = BIN_EDGES) -> tuple[int, int | None]:
    """The seconds [lo, hi) of a duration bin (the last bin has no upper bound)."""
    if bin_ < 1 or bin_ > len(edges) + 1:
        raise ValueError(f"no duration bin {bin_} among {len(edges) + 1}")
    lo = 0 if bin_ == 1 else edges[bin_ - 2]
    return lo, edges[bin_ - 1] if bin_ <= len(edges) else None


def sub_of(seconds: Decimal, bin_: int, edges: tuple[int, ...] = BIN_EDGES) -> int:
    """Which of its bin's SUBS equal parts holds a duration: floor((s - lo) * SUBS / (hi - lo)),
    exact (Decimal integer division; SQL's div() in migration 0007 gives the same). The last,
    unbounded bin is one part."""
    lo, hi = bin_bounds(bin_, edges)
    if hi is None:
        return 0
    return int((seconds - lo) * SUBS // (hi - lo))


def bin_and_sub(seconds: Decimal, edges: tuple[int, ...] = BIN_EDGES) -> tuple[int, int]:
    b = bin_of(seconds, edges)
    return b, sub_of(seconds, b, edges)


def _position(n: int, q: Decimal) -> tuple[int, int, Decimal]:
    """Ranks (0-based) around the q-quantile of n sorted values, and the weight of the upper."""
    h = (n - 1) * q
    lower = int(h)  # h >= 0, so int() is floor
    return lower, min(lower + 1, n - 1), h - lower


def needed_ranks(n: int) -> set[int]:
    """The ranks every quantile of n values is interpolated from."""
    ranks: set[int] = set()
    for q in QUANTILES.values():
        lower, upper, _ = _position(n, q)
        ranks.update((lower, upper))
    return ranks if n else set()


def stats_from_ranks(n: int, value_at: Callable[[int], Decimal]) -> DurationStats:
    """Median and p90 of n values, given the value at each rank `needed_ranks` named."""
    if n == 0:
        return DurationStats(None, None, 0)
    out: dict[str, Decimal] = {}
    for name, q in QUANTILES.items():
        lower, upper, weight = _position(n, q)
        low = value_at(lower)
        out[name] = low + (value_at(upper) - low) * weight
    return DurationStats(out["median"], out["p90"], n)


def stats(values: Iterable[Decimal]) -> DurationStats:
    ordered = sorted(values)
    return stats_from_ranks(len(ordered), ordered.__getitem__)


def locate(histogram: Mapping[int, int], ranks: Iterable[int]) -> dict[int, tuple[int, int]]:
    """For each rank, the bin that holds it and its index among that bin's sorted values."""
    wanted = sorted(ranks)
    found: dict[int, tuple[int, int]] = {}
    before = 0
    i = 0
    for b in sorted(histogram):
        count = histogram[b]
        while i < len(wanted) and wanted[i] < before + count:
            found[wanted[i]] = (b, wanted[i] - before)
            i += 1
        before += count
    if i < len(wanted):
        raise ValueError(f"ranks {wanted[i:]} beyond the {before} values counted")
    return found
