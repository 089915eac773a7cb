"""Derived metrics, plans and spend over days, rounding, CSV cells, and the docs' coverage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.catalogue import CATALOGUE, METRICS, DurationStats, Unit, compute
from services.kpi.plans import spread
from services.kpi.reads.formatting import comparison, csv_text, write
from services.kpi.reads.periods import Period, add_months, local_days, parse_bound

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kpi.md"


class TestCompute:
    def test_ratios_with_a_zero_denominator_are_null(self) -> None:
        sums: dict[str, Decimal] = {}
        for name in ("brief_rate", "lead_quality_rate", "win_rate", "average_check", "ltv"):
            assert compute(name, sums, {}, Decimal(0), Decimal(0)) is None
        assert compute("plan_fulfilment", {"revenue": Decimal(5)}, {}, Decimal(0), None) is None
        assert compute("roi", {"revenue": Decimal(5)}, {}, None, Decimal(0)) is None

    def test_formulas(self) -> None:
        sums = {
            "briefs_filled": Decimal(3),
            "leads_contacted": Decimal(4),
            "sal": Decimal(6),
            "sales_rejected": Decimal(2),
            "deals_won": Decimal(1),
            "deals_lost": Decimal(3),
            "revenue": Decimal(300),
            "payments_count": Decimal(4),
            "leads_received": Decimal(10),
            "ltv_revenue": Decimal(500),
            "ltv_clients": Decimal(2),
        }
        plan, spend = Decimal(600), Decimal(100)
        got = {m.name: compute(m.name, sums, {}, plan, spend) for m in CATALOGUE}
        assert got["brief_rate"] == Decimal("0.75")
        assert got["lead_quality_rate"] == Decimal("0.75")
        assert got["win_rate"] == Decimal("0.25")
        assert got["average_check"] == Decimal(75)
        assert got["plan_fulfilment"] == Decimal("0.5")
        assert got["ltv"] == Decimal(250)
        assert got["cost_per_lead"] == Decimal(10)
        assert got["cost_per_sal"] == Decimal(100) / 6
        assert got["roi"] == Decimal(2)
        assert got["first_response_time"] == DurationStats(None, None, 0)

    def test_plan_and_spend_unknown_under_a_filter_make_their_metrics_null(self) -> None:
        sums = {"revenue": Decimal(300), "leads_received": Decimal(3), "sal": Decimal(1)}
        for name in ("plan", "plan_fulfilment", "spend", "cost_per_lead", "cost_per_sal", "roi"):
            assert compute(name, sums, {}, None, None) is None


class TestSpread:
    def test_a_whole_month_gets_its_amount_in_any_zone(self) -> None:
        for tz in (ZoneInfo("UTC"), ZoneInfo("Asia/Kathmandu"), ZoneInfo("America/St_Johns")):
            p = Period(parse_bound("2026-10-01", tz), parse_bound("2026-11-01", tz))
            assert spread.share_fractions(p, tz) == {"2026-10": Fraction(1)}
        # Santiago's clocks go forward at midnight on 6 September 2026: that day starts at 01:00.
        tz = ZoneInfo("America/Santiago")
        for a, b, month in (
            ("2026-09-01", "2026-10-01", "2026-09"),
            ("2026-08-01", "2026-09-01", "2026-08"),
        ):
            p = Period(parse_bound(a, tz), parse_bound(b, tz))
            assert spread.share_fractions(p, tz) == {month: Fraction(1)}
        p = Period(parse_bound("2026-09-06", tz), parse_bound("2026-09-08", tz))
        assert spread.share_fractions(p, tz) == {"2026-09": Fraction(2, 30)}

    def test_a_period_across_months_gets_a_share_of_each_by_days(self) -> None:
        tz = ZoneInfo("Europe/Moscow")
        p = Period(parse_bound("2026-09-24", tz), parse_bound("2026-10-08", tz))
        shares = spread.share_fractions(p, tz)
        assert shares == {"2026-09": Fraction(7, 30), "2026-10": Fraction(7, 31)}
        amounts = [("2026-09", Decimal(3000)), ("2026-10", Decimal(3100)), ("2026-11", Decimal(9))]
        assert spread.spread(amounts, shares) == Decimal(1400)

    def test_a_cut_day_counts_for_its_part_in_the_period(self) -> None:
        p = Period(datetime(2026, 10, 15, 12, tzinfo=UTC), datetime(2026, 10, 16, tzinfo=UTC))
        assert spread.share_fractions(p, ZoneInfo("UTC")) == {"2026-10": Fraction(1, 62)}

    @settings(max_examples=400, deadline=None)
    @given(
        start=st.datetimes(datetime(2025, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)),
        minutes=st.one_of(st.integers(1, 3 * 24 * 60), st.integers(1, 200 * 24 * 60)),
        # Santiago and Havana move their clocks at midnight: a day may start at 01:00.
        zone=st.sampled_from(
            [
                "UTC",
                "Asia/Kathmandu",
                "America/St_Johns",
                "Europe/Berlin",
                "America/Santiago",
                "America/Havana",
            ]
        ),
    )
    def test_shares_are_each_days_part_over_its_months_days(
        self, start: datetime, minutes: int, zone: str
    ) -> None:
        # The definition, day by day in exact fractions (what the counting shortcut must equal).
        tz = ZoneInfo(zone)
        p = Period(start, start + timedelta(minutes=minutes))
        expected: dict[str, Fraction] = {}
        for day, lo, hi in local_days(p, tz):
            lo, hi = lo.astimezone(UTC), hi.astimezone(UTC)
            part = Fraction(
                (min(hi, p.end) - max(lo, p.start)) // timedelta(microseconds=1),
                (hi - lo) // timedelta(microseconds=1),
            )
            month = spread.month_key(day)
            days = (add_months(day.replace(day=1), 1) - day.replace(day=1)).days
            expected[month] = expected.get(month, Fraction(0)) + part / days
        assert spread.share_fractions(p, tz) == expected

    def test_a_dst_day_is_one_day(self) -> None:
        tz = ZoneInfo("Europe/Berlin")
        p = Period(parse_bound("2026-03-29", tz), parse_bound("2026-03-30", tz))  # 23 hours
        assert spread.share_fractions(p, tz) == {"2026-03": Fraction(1, 31)}

    def test_months_are_yyyy_mm(self) -> None:
        assert spread.parse_month("2026-02").day == 1
        for bad in ("2026-13", "2026-2", "26-02", "2026-02-01"):
            with pytest.raises(ValueError):
                spread.parse_month(bad)


class TestPresentation:
    def test_values_are_rounded_half_up_by_unit(self) -> None:
        assert write(Decimal("2.005"), Unit.MONEY) == 2.01
        assert write(Decimal("0.123450"), Unit.RATIO) == 0.1235
        assert write(Decimal(7), Unit.COUNT) == 7
        assert write(None, Unit.MONEY) is None
        assert write(DurationStats(Decimal("1.0005"), None, 3), Unit.SECONDS) == {
            "median": 1.001,
            "p90": None,
            "count": 3,
        }

    def test_deltas_come_from_exact_values(self) -> None:
        assert comparison(Decimal(12), Decimal(8), Unit.COUNT) == (4, 50.0)
        assert comparison(Decimal(1), Decimal(0), Unit.COUNT) == (1, None)
        assert comparison(None, Decimal(1), Unit.MONEY) == (None, None)
        delta, pct = comparison(
            DurationStats(Decimal(20), Decimal(40), 5),
            DurationStats(Decimal(10), None, 4),
            Unit.SECONDS,
        )
        assert delta == {"median": 10.0, "p90": None, "count": 1}
        assert pct == {"median": 100.0, "p90": None, "count": 25.0}

    def test_csv_cells_never_run_as_spreadsheet_formulas(self) -> None:
        assert csv_text("=HYPERLINK(1)") == "'=HYPERLINK(1)"
        assert csv_text("google") == "google"
        assert csv_text(None) == ""
        assert csv_text(-5) == "-5"
        assert csv_text(0.25) == "0.25"


def test_every_metric_is_documented_for_dashboard_builders() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in METRICS:
        assert f"`{name}`" in text, name
