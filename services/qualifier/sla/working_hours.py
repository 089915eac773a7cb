"""The SLA clock: when an answer is due, counting only a team's working hours. Pure.

A lead that arrives on Friday evening for a team with a 2-hour SLA and a 09:00-18:00
Monday-to-Friday week is due on Monday at 11:00 local time, not on Friday night.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.qualifier.definitions.model import WorkingHours


def due_at(start: datetime, hours: float, schedule: WorkingHours | None) -> datetime:
    """`hours` of working time after `start` (wall-clock hours when there is no schedule)."""
    if schedule is None:
        return start + timedelta(hours=hours)
    zone = schedule.zone
    remaining = timedelta(hours=hours)
    cursor = start.astimezone(zone)
    # Each pass consumes one working day or jumps to the next one; a year bounds the walk
    # even for one working day a week and the longest SLA allowed (30 days of hours).
    for _ in range(366 * 2):
        day = cursor.date()
        opens = datetime.combine(day, schedule.opens, tzinfo=zone)
        closes = datetime.combine(day, schedule.closes, tzinfo=zone)
        if day.weekday() not in schedule.weekdays or cursor >= closes:
            cursor = datetime.combine(day + timedelta(days=1), schedule.opens, tzinfo=zone)
            continue
        cursor = max(cursor, opens)
        # Durations in UTC, so a day with a DST change counts its real length.
        available = closes.astimezone(UTC) - cursor.astimezone(UTC)
        if remaining <= available:
            return (cursor.astimezone(UTC) + remaining).astimezone(start.tzinfo)
        remaining -= available
        cursor = datetime.combine(day + timedelta(days=1), schedule.opens, tzinfo=zone)
    raise ValueError("no working time found within two years")  # validation prevents this
