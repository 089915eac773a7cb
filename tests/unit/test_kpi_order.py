"""Delivery order does not matter: any order, any batching, any redelivery, the same numbers.

Kafka orders events per partition only; the KPI reads three topics, so a stage change
may come before its lead's `lead.received`, and at-least-once delivery repeats events.
These properties shuffle, split and repeat random lead histories and check that the
fold ends with the same lead states, the same facts and the same aggregate sums as
folding the same events once, in business-time order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.fold.facts import (
    DAY,
    MONTH,
    AggKey,
    Fact,
    FineKey,
    FineSums,
    aggregate_keys,
    facts_of,
    floor_to,
    fold,
    merge_events,
)
from services.kpi.fold.lead_state import LeadState, join
from shared.events import Event, Route, Stage
from tests.fixtures.kpi import events as ev

T = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
KINDS = (
    "received",
    "routed",
    "contacted",
    "brief",
    "accepted",
    "rejected",
    "stage",
    "payment",
    "erased",
    "sla",
    "webinar",
)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for _ in range(draw(st.integers(1, 4))):
        lead = ev.snapshot(
            at=T + timedelta(minutes=draw(st.integers(0, 60 * 24 * 40))),
            source=draw(st.sampled_from(["web_form", "api", "webinar_registration"])),
            channel=draw(st.sampled_from(["google", "yandex", None])),
            campaign=draw(st.sampled_from(["autumn", None])),
        )
        for kind in draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=12)):
            at = T + timedelta(minutes=draw(st.integers(0, 60 * 24 * 60)))
            route = draw(st.sampled_from(list(Route)))
            version = draw(st.integers(1, 3))
            d = ev.dims(lead, route, version)
            if kind == "received":
                events.append(ev.received(lead, at=at))
            elif kind == "routed":
                decided = at + timedelta(seconds=draw(st.integers(0, 3)))
                events.append(ev.routed(lead, route, at=at, version=version, decided_at=decided))
            elif kind == "contacted":
                events.append(ev.contacted(lead, d, at=at, first_contact=draw(st.booleans())))
            elif kind == "brief":
                events.append(ev.brief(lead, d, at=at))
            elif kind in ("accepted", "rejected"):
                events.append(ev.feedback(lead, d, at=at, accepted=kind == "accepted"))
            elif kind == "stage":
                events.append(ev.stage(lead, d, draw(st.sampled_from(list(Stage))), at=at))
            elif kind == "payment":
                amount = Decimal(draw(st.integers(1, 10**8))) / 100
                pid = draw(st.sampled_from(["p1", "p2", "p3"]))
                events.append(ev.payment(lead, d, at=at, amount=amount, payment_id=pid))
            elif kind == "erased":
                events.append(ev.erased(lead, at=at))
            elif kind == "sla":
                events.append(ev.sla_breached(lead, d, at=at))
            else:
                events.append(ev.webinar_attended(lead, at=at))
    return events


class Store:
    """What the tables hold, modelled: lead states, fact rows, aggregate sums and the
    counts of each duration bin's parts."""

    def __init__(self) -> None:
        self.states: dict[str, LeadState] = {}
        self.facts: dict[tuple[str, str, str], Fact] = {}
        self.aggregates: defaultdict[AggKey, Decimal] = defaultdict(Decimal)
        self.fine_counts: dict[FineKey, FineSums] = {}

    def apply(self, batch: Sequence[Event]) -> None:
        touched = {e.subject for e in batch}
        changes = fold({lid: self.states.get(lid) for lid in touched}, batch)
        self.states.update(changes.states)
        for key in changes.delete_facts:
            del self.facts[key]
        for lead_id, metric, item, fact in changes.upsert_facts:
            self.facts[(lead_id, metric, item)] = fact
        for agg, amount in changes.aggregates.items():
            self.aggregates[agg] += amount
        for fine, sums in changes.fine_counts.items():
            self.fine_counts[fine] = _added(self.fine_counts.get(fine), sums)

    def sums(self) -> dict[AggKey, Decimal]:
        return {k: v for k, v in self.aggregates.items() if v}

    def counts(self) -> dict[FineKey, FineSums]:
        return {k: v for k, v in self.fine_counts.items() if v.n or v.total or v.squares}


def _added(a: FineSums | None, b: FineSums) -> FineSums:
    if a is None:
        return b
    return FineSums(a.n + b.n, a.total + b.total, a.squares + b.squares)


def _in_business_order(events: list[Event]) -> Store:
    store = Store()
    store.apply(sorted(events, key=lambda e: (e.time, e.id)))
    return store


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=histories())
def test_any_order_batching_and_redelivery_gives_the_same_tables(
    data: st.DataObject, events: list[Event]
) -> None:
    again = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    delivered = data.draw(st.permutations(events + again))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(delivered)), max_size=6)))
    store = Store()
    for lo, hi in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
        store.apply(delivered[lo:hi])

    expected = _in_business_order(events)
    assert store.states == expected.states
    assert store.facts == expected.facts
    assert store.sums() == expected.sums()
    assert store.counts() == expected.counts()


@settings(max_examples=200, deadline=None)
@given(events=histories())
def test_the_aggregates_always_sum_the_facts_of_the_current_states(events: list[Event]) -> None:
    store = Store()
    for e in events:  # one event at a time: every intermediate state is consistent
        store.apply([e])
        recomputed: defaultdict[AggKey, Decimal] = defaultdict(Decimal)
        for state in store.states.values():
            for (metric, _), fact in facts_of(state).items():
                for key, amount in aggregate_keys(metric, fact):
                    recomputed[key] += amount
        assert store.sums() == {k: v for k, v in recomputed.items() if v}
        assert all(v >= 0 for v in store.aggregates.values())
        # Each duration fact counted once, in its month and its bin's part.
        parts: dict[FineKey, FineSums] = {}
        for (_, metric, _), fact in store.facts.items():
            if fact.bin:
                one = FineSums(1, fact.value, fact.value * fact.value)
                for grain in (DAY, MONTH):
                    key = FineKey(grain, floor_to(fact.at, grain), metric, fact.bin, fact.sub)
                    parts[key] = _added(parts.get(key), one)
        assert store.counts() == parts


def _merged(events: Sequence[Event]) -> dict[str, LeadState]:
    states: dict[str, LeadState] = {}
    merge_events({}, events, states)
    return states


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=histories())
def test_joining_states_folded_apart_is_folding_everything(
    data: st.DataObject, events: list[Event]
) -> None:
    # A fold window merges its events into empty states, apart from the stored ones, and
    # joins the two when it writes.
    delivered = data.draw(st.permutations(events))
    cut = data.draw(st.integers(0, len(delivered)))
    stored, window = _merged(delivered[:cut]), _merged(delivered[cut:])
    joined = {
        lead: join(stored.get(lead) or LeadState(lead), window.get(lead) or LeadState(lead))
        for lead in stored.keys() | window.keys()
    }
    assert joined == _merged(events)
