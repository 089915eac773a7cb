"""The SLA clock over a team's working hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.qualifier.definitions.model import WorkingHours
from services.qualifier.sla.working_hours import due_at

MSK = WorkingHours(timezone="Europe/Moscow", start="09:00", end="18:00")  # UTC+3, Mon-Fri


def msk(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in November 2026 given in Moscow hours (2 November is a Monday)."""
    return datetime(2026, 11, day, hour - 3, minute, tzinfo=UTC)


class TestDueAt:
    def test_without_working_hours_the_clock_runs_around_the_clock(self) -> None:
        start = msk(6, 20)
        assert due_at(start, 8, None) == start + timedelta(hours=8)

    def test_inside_working_hours(self) -> None:
        assert due_at(msk(2, 10), 2, MSK) == msk(2, 12)

    def test_the_rest_carries_over_to_the_next_working_morning(self) -> None:
        assert due_at(msk(2, 17), 2, MSK) == msk(3, 10)

    def test_a_friday_evening_lead_is_due_on_monday(self) -> None:
        assert due_at(msk(6, 19, 30), 2, MSK) == msk(9, 11)

    def test_a_weekend_lead_starts_on_monday_morning(self) -> None:
        assert due_at(msk(7, 12), 8, MSK) == msk(9, 17)

    def test_before_opening_the_clock_starts_at_opening(self) -> None:
        assert due_at(msk(3, 6), 1, MSK) == msk(3, 10)

    def test_many_hours_span_days(self) -> None:
        assert due_at(msk(2, 9), 20, MSK) == msk(4, 11)  # 9 + 9 + 2

    def test_a_daylight_saving_change_counts_real_hours(self) -> None:
        berlin = WorkingHours(
            timezone="Europe/Berlin", start="09:00", end="18:00", days=["sat", "sun", "mon"]
        )
        # 25 October 2026 (a Sunday): clocks go back at 03:00, after which UTC+1.
        sat_17 = datetime(2026, 10, 24, 15, 0, tzinfo=UTC)  # 17:00 CEST
        assert due_at(sat_17, 2, berlin) == datetime(2026, 10, 25, 9, 0, tzinfo=UTC)  # 10:00 CET

    def test_the_answer_keeps_the_start_time_zone(self) -> None:
        assert due_at(msk(2, 10), 1, MSK).tzinfo == UTC


class TestValidation:
    def test_an_unknown_zone_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="unknown time zone"):
            WorkingHours(timezone="Mars/Olympus")

    def test_start_before_end(self) -> None:
        with pytest.raises(ValidationError, match="start must be before end"):
            WorkingHours(start="18:00", end="09:00")

    def test_times_are_quoted_hh_mm(self) -> None:
        with pytest.raises(ValidationError):
            WorkingHours.model_validate({"start": 540})  # what YAML makes of unquoted 09:00
        with pytest.raises(ValidationError):
            WorkingHours(start="9am")
