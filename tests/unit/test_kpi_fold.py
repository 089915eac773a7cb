"""The KPI fold and period arithmetic: pure, order-independent."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from services.kpi.fold import fold
from services.kpi.periods import Period, parse_bound, previous, year_ago
from shared.events import Decision, LeadRouted, LeadRoutedData, Route
from tests.support import received

UTC_ZONE = ZoneInfo("UTC")


def _routed(route: Route, **lead: object) -> LeadRouted:
    event = received(**lead)
    decision = Decision(
        route=route, score=1, definition_version=2, reasons=[], decided_at=event.time
    )
    data = LeadRoutedData(**event.data.model_dump(), decision=decision)
    return LeadRouted(source="/qualifier", time=event.time, subject=event.subject, data=data)


class TestFold:
    def test_counts_by_metric_and_dimension(self) -> None:
        events = [received(), received(), _routed(Route.sales), _routed(Route.rejected)]
        totals = fold(events)
        by_metric: dict[str, int] = {}
        for key, value in totals.items():
            by_metric[key.metric] = by_metric.get(key.metric, 0) + int(value)
        assert by_metric == {"leads_received": 2, "routed_sales": 1, "rejected": 1}
        routed_key = next(k for k in totals if k.metric == "routed_sales")
        assert (routed_key.route, routed_key.definition_version) == ("sales", "2")
        assert routed_key.channel == "direct" and routed_key.campaign == "none"

    def test_order_does_not_matter(self) -> None:
        events = [received() for _ in range(5)] + [_routed(Route.nurture) for _ in range(5)]
        shuffled = events[:]
        random.Random(7).shuffle(shuffled)
        assert fold(events) == fold(shuffled)


class TestPeriods:
    def test_whole_months_compare_with_the_months_before(self) -> None:
        p = Period(parse_bound("2026-10-01", UTC_ZONE), parse_bound("2026-11-01", UTC_ZONE))
        prev = previous(p, UTC_ZONE)
        assert prev.start == datetime(2026, 9, 1, tzinfo=UTC_ZONE)
        assert prev.end == p.start

    def test_a_quarter_compares_with_the_quarter_before(self) -> None:
        p = Period(parse_bound("2026-01-01", UTC_ZONE), parse_bound("2026-04-01", UTC_ZONE))
        assert previous(p, UTC_ZONE).start == datetime(2025, 10, 1, tzinfo=UTC_ZONE)

    def test_other_periods_compare_with_the_same_length_before(self) -> None:
        p = Period(parse_bound("2026-10-10", UTC_ZONE), parse_bound("2026-10-17", UTC_ZONE))
        assert previous(p, UTC_ZONE).start == datetime(2026, 10, 3, tzinfo=UTC_ZONE)

    def test_year_ago_keeps_the_dates(self) -> None:
        p = Period(parse_bound("2024-02-29", UTC_ZONE), parse_bound("2024-03-01", UTC_ZONE))
        ago = year_ago(p, UTC_ZONE)
        assert (ago.start.date().isoformat(), ago.end.date().isoformat()) == (
            "2023-02-28", "2023-03-01",
        )  # fmt: skip

    def test_dates_are_local_midnight_in_the_zone(self) -> None:
        moscow = ZoneInfo("Europe/Moscow")
        assert parse_bound("2026-10-01", moscow).astimezone(UTC) == datetime(
            2026, 9, 30, 21, 0, tzinfo=UTC
        )
