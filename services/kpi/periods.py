"""Period arithmetic for comparisons: the period before, and the same dates a year ago. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Period:
    start: datetime  # inclusive, timezone-aware
    end: datetime  # exclusive


def parse_bound(text: str, tz: ZoneInfo) -> datetime:
    """`YYYY-MM-DD` is midnight in `tz`; an RFC 3339 time keeps its own offset."""
    try:
        return datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone offset")
    return parsed


def _local(dt: datetime, tz: ZoneInfo) -> datetime:
    return dt.astimezone(tz)


def _is_month_start(dt: datetime, tz: ZoneInfo) -> bool:
    local = _local(dt, tz)
    return local.day == 1 and local.time() == time(0)


def _add_months(d: date, months: int) -> date:
    month_index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(month_index, 12)
    return date(year, month + 1, 1)


def _months_between(start: date, end: date) -> int:
    return (end.year - start.year) * 12 + (end.month - start.month)


def previous(period: Period, tz: ZoneInfo) -> Period:
    """Whole months compare with the same number of months before; otherwise the same length."""
    if _is_month_start(period.start, tz) and _is_month_start(period.end, tz):
        start_d, end_d = _local(period.start, tz).date(), _local(period.end, tz).date()
        months = _months_between(start_d, end_d)
        prev_start = _add_months(start_d, -months)
        return Period(datetime.combine(prev_start, time(0), tzinfo=tz), period.start)
    return Period(period.start - (period.end - period.start), period.start)


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


def as_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def span(period: Period) -> timedelta:
    return period.end - period.start
