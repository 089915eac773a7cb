"""The KPI fold: which facts a lead's events make, under which dimensions, at which time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.kpi.fold import lead_state
from services.kpi.fold.facts import (
    BY_DIMENSIONS,
    DAY,
    HOUR,
    MONTH,
    ROLLUP_GRAINS,
    TOTAL,
    Dims,
    Fact,
    aggregate_keys,
    facts_of,
    fold,
)
from services.kpi.fold.lead_state import LeadState, merge
from shared.events import Event, Route, Stage
from tests.fixtures.kpi import events as ev

T = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _state(*events: Event) -> LeadState:
    state = LeadState(events[0].subject)
    for e in events:
        state = merge(state, e)
    return state


def _facts(*events: Event) -> dict[tuple[str, str], Fact]:
    return facts_of(_state(*events))


class TestCounts:
    def test_a_sales_lead_from_receipt_to_payments(self) -> None:
        lead = ev.snapshot(at=T, channel=None, campaign=None)
        d = ev.dims(lead, Route.sales, 2)
        facts = _facts(
            ev.received(lead),
            ev.routed(lead, Route.sales, version=2),
            ev.contacted(lead, d, at=T + H),
            ev.feedback(lead, d, at=T + 2 * H, accepted=True),
            ev.stage(lead, d, Stage.sql, at=T + 3 * H),
            ev.stage(lead, d, Stage.demo_held, at=T + 4 * H),
            ev.stage(lead, d, Stage.proposal_sent, at=T + 6 * H),
            ev.stage(lead, d, Stage.contract_sent, at=T + 9 * H),
            ev.stage(lead, d, Stage.won, at=T + 10 * H),
            ev.payment(lead, d, at=T + 24 * H, amount="1000.50", payment_id="p1"),
            ev.payment(lead, d, at=T + 48 * H, amount="99.50", payment_id="p2"),
        )
        assert {k for k in facts} == {
            ("leads_received", ""),
            ("routed_sales", ""),
            ("leads_contacted", ""),
            ("sal", ""),
            ("sql", ""),
            ("demos_held", ""),
            ("proposals_sent", ""),
            ("contracts_sent", ""),
            ("deals_won", ""),
            ("payments_count", "p1"),
            ("payments_count", "p2"),
            ("revenue", "p1"),
            ("revenue", "p2"),
            ("ltv_clients", ""),
            ("ltv_revenue", ""),
            ("first_response_time", ""),
            ("proposal_time", ""),
            ("contract_time", ""),
            ("lead_lifetime", ""),
        }
        expected_dims = Dims("web_form", "direct", "none", "sales", "2")
        assert all(f.dims == expected_dims for f in facts.values())
        assert facts[("revenue", "p2")] == Fact(T + 48 * H, Decimal("99.50"), expected_dims)
        # ltv: at the first payment, all-time revenue
        assert facts[("ltv_revenue", "")].at == T + 24 * H
        assert facts[("ltv_revenue", "")].value == Decimal("1100.00")
        # durations: seconds, at the closing event
        assert facts[("first_response_time", "")].value == 3600
        assert facts[("first_response_time", "")].at == T + H
        assert facts[("proposal_time", "")].value == 2 * 3600
        assert facts[("contract_time", "")].value == 3 * 3600
        assert facts[("lead_lifetime", "")].value == 24 * 3600

    def test_the_earliest_contact_is_the_first_whatever_the_flag(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        facts = _facts(
            ev.received(lead),
            ev.contacted(lead, d, at=T + 2 * H, first_contact=True),
            ev.contacted(lead, d, at=T + H, first_contact=False),  # reported late, earlier `at`
            ev.contacted(lead, d, at=T + 5 * H, first_contact=False),
        )
        assert facts[("leads_contacted", "")].at == T + H
        assert facts[("first_response_time", "")].value == 3600

    def test_steps_count_once_per_lead_at_their_first_time(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.processing, 1)
        facts = _facts(
            ev.received(lead),
            ev.brief(lead, d, at=T + 3 * H),
            ev.brief(lead, d, at=T + H),
            ev.stage(lead, d, Stage.lost, at=T + 4 * H),
            ev.stage(lead, d, Stage.lost, at=T + 9 * H),
        )
        assert facts[("briefs_filled", "")].at == T + H
        assert facts[("deals_lost", "")].at == T + 4 * H

    def test_rejected_then_accepted_counts_in_both(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        facts = _facts(
            ev.received(lead),
            ev.feedback(lead, d, at=T + H, accepted=False),
            ev.feedback(lead, d, at=T + 5 * H, accepted=True),
        )
        assert facts[("sales_rejected", "")].at == T + H
        assert facts[("sal", "")].at == T + 5 * H

    def test_a_payment_reported_twice_is_one_payment(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        facts = _facts(
            ev.received(lead),
            ev.payment(lead, d, at=T + 2 * H, amount="10", payment_id="same"),
            ev.payment(lead, d, at=T + H, amount="10", payment_id="same"),
        )
        assert [k for k in facts if k[0] == "payments_count"] == [("payments_count", "same")]
        assert facts[("revenue", "same")].at == T + H

    def test_a_stage_before_its_start_gives_a_zero_duration(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        facts = _facts(
            ev.received(lead),
            ev.stage(lead, d, Stage.demo_held, at=T + 5 * H),
            ev.stage(lead, d, Stage.proposal_sent, at=T + 2 * H),
        )
        assert facts[("proposal_time", "")].value == 0

    def test_durations_need_both_ends(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        facts = _facts(
            ev.contacted(lead, d, at=T + H), ev.stage(lead, d, Stage.proposal_sent, at=T)
        )
        assert ("first_response_time", "") not in facts  # no lead.received yet
        assert ("proposal_time", "") not in facts  # no demo
        assert ("leads_received", "") not in facts


class TestDimensions:
    def test_rerouting_moves_the_lead_and_counts_each_route_once(self) -> None:
        lead = ev.snapshot(at=T)
        p = ev.dims(lead, Route.processing, 1)
        s = ev.dims(lead, Route.sales, 2)
        facts = _facts(
            ev.received(lead),
            ev.routed(lead, Route.processing, version=1),
            ev.contacted(lead, p, at=T + H),
            ev.brief(lead, p, at=T + 2 * H),
            ev.routed(lead, Route.sales, at=T + 2 * H, version=2, decided_at=T + 2 * H),
            ev.feedback(lead, s, at=T + 3 * H, accepted=True),
            # briefed again and decided again: still once in routed_sales, at the first time
            ev.routed(lead, Route.sales, at=T + 5 * H, version=3, decided_at=T + 5 * H),
        )
        assert facts[("routed_processing", "")].dims.route == "processing"
        assert facts[("routed_processing", "")].dims.definition_version == "1"
        assert facts[("routed_processing", "")].at == T
        assert facts[("routed_sales", "")].dims.definition_version == "2"
        assert facts[("routed_sales", "")].at == T + 2 * H
        # Everything else follows the lead to its latest decision: sales, version 3.
        for key in (
            ("leads_received", ""),
            ("leads_contacted", ""),
            ("briefs_filled", ""),
            ("sal", ""),
        ):
            assert (facts[key].dims.route, facts[key].dims.definition_version) == ("sales", "3")

    def test_decisions_at_one_time_are_ordered_by_when_they_were_made(self) -> None:
        lead = ev.snapshot(at=T)
        later = ev.routed(lead, Route.nurture, at=T, decided_at=T + timedelta(seconds=5))
        earlier = ev.routed(lead, Route.sales, at=T, decided_at=T + timedelta(seconds=1))
        for order in ((later, earlier), (earlier, later)):
            assert _state(ev.received(lead), *order).route == "nurture"

    def test_a_lifecycle_event_before_its_lead_carries_the_dimensions(self) -> None:
        lead = ev.snapshot(at=T, source="api", channel="yandex", campaign="spring")
        d = ev.dims(lead, Route.sales, 4)
        early = _facts(ev.contacted(lead, d, at=T + H))
        assert early[("leads_contacted", "")].dims == Dims("api", "yandex", "spring", "sales", "4")

    def test_what_intake_received_wins_over_what_a_lifecycle_event_carried(self) -> None:
        lead = ev.snapshot(at=T, source="api", channel="yandex", campaign="spring")
        wrong = ev.dims(ev.snapshot(at=T, source="import", channel="x", campaign="y"), "sales", 1)
        wrong_event = ev.contacted(lead, wrong, at=T + H)
        state = _state(wrong_event, ev.received(lead))
        assert state.identity is not None
        assert (state.identity.source, state.identity.channel) == ("api", "yandex")

    def test_long_utm_values_are_cut(self) -> None:
        lead = ev.snapshot(at=T, channel="g" * 500)
        fact = _facts(ev.received(lead))[("leads_received", "")]
        assert len(fact.dims.channel) == lead_state.MAX_DIMENSION_LENGTH


class TestEventsThatCountNothing:
    def test_erasure_webinar_attendance_and_sla_breaches_change_no_fact(self) -> None:
        lead = ev.snapshot(at=T, source="webinar_registration")
        d = ev.dims(lead, Route.sales, 1)
        base = [ev.received(lead), ev.routed(lead, Route.sales), ev.contacted(lead, d, at=T + H)]
        more = [
            ev.erased(lead, at=T + 9 * H),
            ev.webinar_attended(lead, at=T + 2 * H),
            ev.sla_breached(lead, d, at=T + 3 * H),
        ]
        assert _facts(*base, *more) == _facts(*base)

    def test_an_erasure_alone_makes_no_lead(self) -> None:
        lead = ev.snapshot(at=T)
        changes = fold({}, [ev.erased(lead, at=T)])
        assert not changes.states and not changes.aggregates

    def test_the_state_holds_no_personal_data(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        state = _state(ev.received(lead), ev.routed(lead, Route.sales), ev.contacted(lead, d, at=T))
        text = str(lead_state.to_json(state))
        for personal in (lead.name, lead.email, lead.phone, lead.company):
            assert personal and personal not in text


class TestChanges:
    def test_a_redelivered_event_changes_nothing(self) -> None:
        lead = ev.snapshot(at=T)
        received = ev.received(lead)
        first = fold({}, [received])
        again = fold(first.states, [received])
        assert not again.states and not again.aggregates and not again.upsert_facts

    def test_a_rerouting_moves_aggregates_from_the_old_route_to_the_new(self) -> None:
        lead = ev.snapshot(at=T)
        first = fold({}, [ev.received(lead), ev.routed(lead, Route.processing)])
        moved = fold(first.states, [ev.routed(lead, Route.sales, at=T + H, version=2)])
        received_rows = {
            (k.route, k.definition_version): v
            for k, v in moved.aggregates.items()
            if k.metric == "leads_received" and k.rollup == BY_DIMENSIONS and k.grain == DAY
        }
        assert received_rows == {("processing", "1"): -1, ("sales", "2"): 1}
        # The totals do not move.
        assert not any(k.metric == "leads_received" and k.rollup == TOTAL for k in moved.aggregates)

    def test_the_state_round_trips_through_json(self) -> None:
        lead = ev.snapshot(at=T)
        d = ev.dims(lead, Route.sales, 1)
        state = _state(
            ev.received(lead),
            ev.routed(lead, Route.processing),
            ev.routed(lead, Route.sales, at=T + H, version=2),
            ev.contacted(lead, d, at=T + H),
            ev.payment(lead, d, at=T + 2 * H, amount="5.25"),
        )
        assert lead_state.from_json(lead.lead_id, lead_state.to_json(state)) == state


def test_a_fact_adds_to_every_kept_grain_by_dimensions_and_in_total() -> None:
    at = datetime(2026, 10, 15, 12, 34, 56, tzinfo=UTC)
    fact = Fact(at, Decimal("7.5"), Dims("api", "google", "none", "sales", "1"))
    keys = aggregate_keys("revenue", fact)
    starts = {(k.grain, k.rollup): k.bucket_start for k, _ in keys}
    assert starts == {
        (HOUR, TOTAL): datetime(2026, 10, 15, 12, tzinfo=UTC),
        (DAY, TOTAL): datetime(2026, 10, 15, tzinfo=UTC),
        (MONTH, TOTAL): datetime(2026, 10, 1, tzinfo=UTC),
        # By dimension, hours are not kept: they would be as many rows as the facts.
        (DAY, BY_DIMENSIONS): datetime(2026, 10, 15, tzinfo=UTC),
        (MONTH, BY_DIMENSIONS): datetime(2026, 10, 1, tzinfo=UTC),
    }
    assert {k.grain for k, _ in keys if k.rollup == BY_DIMENSIONS} == set(
        ROLLUP_GRAINS[BY_DIMENSIONS]
    )
    assert all(v == Decimal("7.5") for _, v in keys)
    by_dims = next(k for k, _ in keys if k.rollup == BY_DIMENSIONS)
    assert (by_dims.source, by_dims.channel, by_dims.route) == ("api", "google", "sales")
    total = next(k for k, _ in keys if k.rollup == TOTAL)
    assert (total.source, total.channel, total.route) == ("", "", "")
    # A duration counts 1 in its value bin.
    duration = Fact(at, Decimal(3600), fact.dims, bin=40)
    assert {(k.bin, v) for k, v in aggregate_keys("first_response_time", duration)} == {(40, 1)}
