"""Calendar arithmetic in any time zone, and the exact cover of a period by stored buckets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.fold.facts import DAY, HOUR, MONTH, ROLLUP_GRAINS
from services.kpi.reads.coverage import cover, next_bucket
from services.kpi.reads.periods import Period, buckets, parse_bound, previous, year_ago

UTC_ZONE = ZoneInfo("UTC")
MOSCOW = ZoneInfo("Europe/Moscow")
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30
KATHMANDU = ZoneInfo("Asia/Kathmandu")  # +05:45
BERLIN = ZoneInfo("Europe/Berlin")  # DST


def _p(start: str, end: str, tz: ZoneInfo) -> Period:
    return Period(parse_bound(start, tz), parse_bound(end, tz))


class TestBounds:
    def test_dates_are_local_midnight_in_the_zone(self) -> None:
        assert parse_bound("2026-10-01", MOSCOW).astimezone(UTC) == datetime(
            2026, 9, 30, 21, 0, tzinfo=UTC
        )
        assert parse_bound("2026-10-01", KATHMANDU).astimezone(UTC) == datetime(
            2026, 9, 30, 18, 15, tzinfo=UTC
        )

    def test_rfc3339_times_keep_their_offset(self) -> None:
        assert parse_bound("2026-10-01T10:17:00+03:00", UTC_ZONE) == datetime(
            2026, 10, 1, 7, 17, tzinfo=UTC
        )
        assert parse_bound("2026-10-01T10:17:00Z", MOSCOW) == datetime(
            2026, 10, 1, 10, 17, tzinfo=UTC
        )

    def test_a_time_without_offset_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no time zone offset"):
            parse_bound("2026-10-01T10:17:00", UTC_ZONE)


class TestComparisons:
    def test_whole_months_compare_with_as_many_months_before(self) -> None:
        assert previous(_p("2026-10-01", "2026-11-01", MOSCOW), MOSCOW) == _p(
            "2026-09-01", "2026-10-01", MOSCOW
        )
        assert previous(_p("2026-01-01", "2026-04-01", UTC_ZONE), UTC_ZONE) == _p(
            "2025-10-01", "2026-01-01", UTC_ZONE
        )

    def test_whole_days_compare_with_as_many_calendar_days_across_dst(self) -> None:
        # The week of the spring DST change in Berlin is 167 hours long: still a week.
        week = _p("2026-03-30", "2026-04-06", BERLIN)
        assert previous(week, BERLIN) == _p("2026-03-23", "2026-03-30", BERLIN)
        dst_week = _p("2026-03-23", "2026-03-30", BERLIN)
        assert previous(dst_week, BERLIN) == _p("2026-03-16", "2026-03-23", BERLIN)

    def test_other_periods_compare_with_the_same_length_before(self) -> None:
        p = Period(
            parse_bound("2026-10-10T06:00:00Z", UTC_ZONE),
            parse_bound("2026-10-10T18:00:00Z", UTC_ZONE),
        )
        assert previous(p, UTC_ZONE) == Period(
            datetime(2026, 10, 9, 18, tzinfo=UTC), datetime(2026, 10, 10, 6, tzinfo=UTC)
        )

    def test_year_ago_keeps_the_local_dates(self) -> None:
        ago = year_ago(_p("2024-02-29", "2024-03-01", UTC_ZONE), UTC_ZONE)
        assert (ago.start.date().isoformat(), ago.end.date().isoformat()) == (
            "2023-02-28",
            "2023-03-01",
        )
        assert year_ago(_p("2026-10-01", "2026-11-01", KOLKATA), KOLKATA) == _p(
            "2025-10-01", "2025-11-01", KOLKATA
        )


class TestBuckets:
    def test_months_in_the_zone_clipped_to_the_period(self) -> None:
        got = buckets(_p("2026-09-15", "2026-11-03", KOLKATA), "month", KOLKATA)
        assert [b.label for b in got] == ["2026-09", "2026-10", "2026-11"]
        assert got[0].start == parse_bound("2026-09-15", KOLKATA)
        assert got[1].start == parse_bound("2026-10-01", KOLKATA)
        assert got[-1].end == parse_bound("2026-11-03", KOLKATA)

    def test_iso_weeks_start_on_monday(self) -> None:
        got = buckets(_p("2026-09-30", "2026-10-15", UTC_ZONE), "week", UTC_ZONE)
        assert [b.label for b in got] == ["2026-W40", "2026-W41", "2026-W42"]
        assert got[1].start == parse_bound("2026-10-05", UTC_ZONE)

    def test_days_across_a_dst_change_are_calendar_days(self) -> None:
        got = buckets(_p("2026-03-28", "2026-03-31", BERLIN), "day", BERLIN)
        assert [b.end.astimezone(UTC) - b.start.astimezone(UTC) for b in got] == [
            timedelta(hours=24),
            timedelta(hours=23),
            timedelta(hours=24),
        ]


_GRAIN_LENGTH = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    # Many on round hours, days and months, and some anywhere.
    return base + timedelta(
        minutes=draw(st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59)),
        hours=draw(st.integers(0, 23)),
        days=draw(st.sampled_from([0, 31, 59, 90, 400]) | st.integers(0, 800)),
        microseconds=draw(st.sampled_from([0]) | st.integers(0, 999_999)),
    )


class TestCoverage:
    @settings(max_examples=400, deadline=None)
    @given(a=instants(), b=instants(), grains=st.sampled_from(list(ROLLUP_GRAINS.values())))
    def test_the_pieces_are_exactly_the_period(
        self, a: datetime, b: datetime, grains: tuple[str, ...]
    ) -> None:
        start, end = min(a, b), max(a, b)
        c = cover(start, end, grains)
        pieces: list[tuple[datetime, datetime]] = list(c.facts)
        for grain, lo, hi in c.buckets:
            assert lo < hi
            at = lo
            while at < hi:  # every bucket in the range is whole
                nxt = next_bucket(at, grain)
                assert nxt <= hi
                pieces.append((at, nxt))
                at = nxt
        pieces.sort()
        if start == end:
            assert not pieces
            return
        assert pieces[0][0] == start and pieces[-1][1] == end
        for (_, hi), (lo, _) in itertools.pairwise(pieces):
            assert hi == lo  # no gap, no overlap
        # Raw facts only at the edges: under one bucket of the finest grain on each side.
        finest = _GRAIN_LENGTH[grains[0]]
        assert sum((hi - lo for lo, hi in c.facts), timedelta(0)) < 2 * finest
        assert all(hi - lo < finest for lo, hi in c.facts) or not c.buckets

    def test_a_month_in_a_half_hour_zone_reads_days_hours_and_two_half_hours(self) -> None:
        c = cover(parse_bound("2026-10-01", KOLKATA), parse_bound("2026-11-01", KOLKATA))
        assert [g for g, _, _ in c.buckets] == [HOUR, HOUR, DAY]
        assert [hi - lo for lo, hi in c.facts] == [timedelta(minutes=30)] * 2

    def test_a_filtered_read_takes_the_hours_of_cut_days_from_the_facts(self) -> None:
        c = cover(
            parse_bound("2026-10-01", MOSCOW), parse_bound("2026-11-01", MOSCOW), (DAY, MONTH)
        )
        assert [g for g, _, _ in c.buckets] == [DAY]
        assert [hi - lo for lo, hi in c.facts] == [timedelta(hours=3), timedelta(hours=21)]

    def test_a_quarter_in_utc_reads_three_month_buckets(self) -> None:
        c = cover(parse_bound("2026-01-01", UTC_ZONE), parse_bound("2026-04-01", UTC_ZONE))
        assert c.buckets == [
            (MONTH, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
        ]
        assert not c.facts
