"""Calendar arithmetic in the request's time zone: bounds, comparisons, timeseries buckets. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, timezone-aware
    end: datetime  # exclusive


def parse_bound(text: str, tz: ZoneInfo) -> datetime:
    """`YYYY-MM-DD` is midnight in `tz`; an RFC 3339 time keeps its own offset."""
    try:
        return local_midnight(date.fromisoformat(text), tz)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone offset")
    return parsed


def local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(0), tzinfo=tz)


def _local(dt: datetime, tz: ZoneInfo) -> datetime:
    return dt.astimezone(tz)


def _is_midnight(dt: datetime, tz: ZoneInfo) -> bool:
    local = _local(dt, tz)
    return local_midnight(local.date(), tz) == dt


def _is_month_start(dt: datetime, tz: ZoneInfo) -> bool:
    return _is_midnight(dt, tz) and _local(dt, tz).day == 1


def add_months(d: date, months: int) -> date:
    """The first day of the month `months` after (or before) d's month."""
    month_index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(month_index, 12)
    return date(year, month + 1, 1)


def _months_between(start: date, end: date) -> int:
    return (end.year - start.year) * 12 + (end.month - start.month)


def previous(period: Period, tz: ZoneInfo) -> Period:
    """The period just before: as many calendar months for whole months, as many days for
    whole days (a week across a DST change stays a calendar week), else the same length."""
    start, end = period.start, period.end
    if _is_month_start(start, tz) and _is_month_start(end, tz):
        start_d, end_d = _local(start, tz).date(), _local(end, tz).date()
        months = _months_between(start_d, end_d)
        return Period(local_midnight(add_months(start_d, -months), tz), start)
    if _is_midnight(start, tz) and _is_midnight(end, tz):
        start_d, end_d = _local(start, tz).date(), _local(end, tz).date()
        days = (end_d - start_d).days
        return Period(local_midnight(start_d - timedelta(days=days), tz), start)
    return Period(start - (end - start), start)


def _year_earlier(dt: datetime, tz: ZoneInfo) -> datetime:
    local = _local(dt, tz)
    try:
        shifted = local.replace(year=local.year - 1)
    except ValueError:  # 29 February: a year earlier has no such day
        shifted = local.replace(year=local.year - 1, day=28)
    # Re-attach the zone so a DST difference between the years is respected.
    return datetime.combine(shifted.date(), shifted.time(), tzinfo=tz)


def year_ago(period: Period, tz: ZoneInfo) -> Period:
    """The same local dates one year earlier."""
    return Period(_year_earlier(period.start, tz), _year_earlier(period.end, tz))


def span(period: Period) -> timedelta:
    return period.end - period.start


# Timeseries buckets: local calendar days, ISO weeks (Monday) and months.

GRAINS = ("day", "week", "month")


@dataclass(frozen=True)
class Bucket:
    start: datetime  # clipped to the period
    end: datetime
    label: str  # 2026-10-05, 2026-W41, 2026-10


def _bucket_of(d: date, grain: str) -> tuple[date, date, str]:
    if grain == "day":
        return d, d + timedelta(days=1), d.isoformat()
    if grain == "week":
        monday = d - timedelta(days=d.weekday())
        iso = monday.isocalendar()
        return monday, monday + timedelta(days=7), f"{iso.year}-W{iso.week:02d}"
    if grain == "month":
        first = d.replace(day=1)
        return first, add_months(first, 1), f"{first.year:04d}-{first.month:02d}"
    raise ValueError(f"unknown grain {grain!r}")


def buckets(period: Period, grain: str, tz: ZoneInfo) -> list[Bucket]:
    """The calendar buckets of `grain` that meet the period, clipped to it."""
    out: list[Bucket] = []
    day = _local(period.start, tz).date()
    while True:
        first, after, label = _bucket_of(day, grain)
        start, end = local_midnight(first, tz), local_midnight(after, tz)
        if start >= period.end:
            break
        out.append(Bucket(max(start, period.start), min(end, period.end), label))
        day = after
    return out


def local_days(period: Period, tz: ZoneInfo) -> list[tuple[date, datetime, datetime]]:
    """Every local calendar day that meets the period: (date, its start, its end), unclipped."""
    out = []
    day = _local(period.start, tz).date()
    while True:
        start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
        if start >= period.end:
            break
        out.append((day, start, end))
        day += timedelta(days=1)
    return out
