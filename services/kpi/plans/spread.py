"""Monthly amounts (revenue plan, marketing spend) spread over the days of a period. Pure.

A month's amount is spread evenly over the month's calendar days in the request's time
zone, and a day cut by the period counts for the part of it that lies in the period. So
a whole month gets exactly its amount in every time zone, a week gets 7/30 of a 30-day
month, and `from=2026-10-15T12:00:00Z` gets half of 15 October. Fractions are exact;
money is rounded only when the answer is written.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from services.kpi.reads.periods import Period, add_months, local_midnight

MONTH_PATTERN = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_MICROSECOND = timedelta(microseconds=1)


def parse_month(text: str) -> date:
    match = MONTH_PATTERN.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a month in the form YYYY-MM")
    return date(int(match[1]), int(match[2]), 1)


def month_key(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _days_in_month(d: date) -> int:
    return (add_months(d, 1) - d.replace(day=1)).days


def share_fractions(period: Period, tz: ZoneInfo) -> dict[str, Fraction]:
    """For each month meeting the period, the fraction of its amount the period gets."""
    # Only the period's first and last local days can be cut: every day between them is
    # whole and is counted per month, not day by day (a summary spreads three periods of
    # up to months of days, and the day-by-day walk was a sixth of its time).
    lo, hi = period.start.astimezone(UTC), period.end.astimezone(UTC)
    first = period.start.astimezone(tz).date()
    last = _last_day(period, tz, first)
    whole: dict[str, int] = {}
    days_in: dict[str, int] = {}
    cut: dict[str, Fraction] = {}
    month = first.replace(day=1)
    while month <= last:
        following = add_months(month, 1)
        key = month_key(month)
        days_in[key] = _days_in_month(month)
        # Days of this month strictly between the first and the last day.
        whole[key] = max(0, (min(following, last) - max(month, first + timedelta(days=1))).days)
        month = following
    for day in dict.fromkeys((first, last)):
        # In UTC: Python subtracts two times of one zone on the wall clock, where a DST day
        # would last 24 hours.
        start = local_midnight(day, tz).astimezone(UTC)
        end = local_midnight(day + timedelta(days=1), tz).astimezone(UTC)
        key = month_key(day)
        if lo <= start and end <= hi:
            whole[key] += 1
            continue
        overlap = min(end, hi) - max(start, lo)
        fraction = Fraction(overlap // _MICROSECOND, (end - start) // _MICROSECOND)
        cut[key] = cut.get(key, Fraction(0)) + fraction
    return {key: (whole[key] + cut.get(key, 0)) / Fraction(n) for key, n in days_in.items()}


def _last_day(period: Period, tz: ZoneInfo, first: date) -> date:
    """The last local day meeting the period (whose midnight is before its end), as
    periods.local_days walks to it."""
    day = max(first, (period.end - _MICROSECOND).astimezone(tz).date())
    while local_midnight(day + timedelta(days=1), tz) < period.end:
        day += timedelta(days=1)
    while day > first and local_midnight(day, tz) >= period.end:
        day -= timedelta(days=1)
    return day


def spread(amounts: Iterable[tuple[str, Decimal]], shares: Mapping[str, Fraction]) -> Decimal:
    """The period's part of monthly amounts given as (YYYY-MM, amount)."""
    total = Fraction(0)
    for month, amount in amounts:
        total += Fraction(amount) * shares.get(month, Fraction(0))
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        return Decimal(total.numerator) / Decimal(total.denominator)
