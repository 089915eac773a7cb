"""The KPI fold: a lead's facts from its state, and what a batch of events changes. Pure.

A lead's facts (one per metric it counts in, per payment, per duration) are a function
of its state (`lead_state`), so folding events is: merge them into the states of the
leads they concern, derive each changed lead's facts before and after, and turn the
difference into fact rows to replace and increments for the aggregates. Increments
commute, and the states do not depend on delivery order, so neither do the tables.

Dimensions: a lead's source, channel and campaign come from the lead itself; its
route and definition version are those of its latest routing decision. Every fact
of a lead is grouped under those, so a funnel filtered by route follows the same leads
from the first step to the last, and when a lead is routed again (a processing lead
briefed and sent to sales) its earlier facts move to the new route. The exception:
`routed_*` count a lead once per route it was ever sent to, each under its own route
and the definition version of that decision.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from services.kpi.catalogue import (
    DURATION_METRICS,
    FEEDBACK_METRICS,
    LTV_CLIENTS,
    LTV_REVENUE,
    ROUTE_METRICS,
    STAGE_METRICS,
)
from services.kpi.fold.durations import (
    BIN_EDGES,
    NOT_A_DURATION,
    bin_and_sub,
    seconds_between,
)
from services.kpi.fold.lead_state import LeadState, concerns_kpi, merge
from shared.events import Event

DIMENSIONS: tuple[str, ...] = ("source", "channel", "campaign", "route", "definition_version")
UNKNOWN = ""  # a dimension not known yet (a lead not routed yet has no route)

# Aggregate grains, in UTC: hours for the edges of a period, days and months for its body.
HOUR, DAY, MONTH = "h", "d", "m"
GRAINS: tuple[str, ...] = (HOUR, DAY, MONTH)
# Aggregate rows by every dimension, and totals (dimensions UNKNOWN) for unfiltered answers.
BY_DIMENSIONS, TOTAL = 0, 1
# The grains kept for each rollup. Hours by dimension would hold nearly a row per fact (as
# many rows as the facts they sum), so a filtered read takes the hours at a period's edges
# from the facts; totals keep hours, so an unfiltered read in any time zone stays cheap.
ROLLUP_GRAINS: dict[int, tuple[str, ...]] = {BY_DIMENSIONS: (DAY, MONTH), TOTAL: GRAINS}

ONE = Decimal(1)


class Dims(NamedTuple):
    source: str
    channel: str
    campaign: str
    route: str
    definition_version: str


class Fact(NamedTuple):
    """One contribution of a lead: a count (1), a payment amount, or a duration in seconds
    (with its value bin, and the part of the bin: durations.sub_of)."""

    at: datetime
    value: Decimal
    dims: Dims
    bin: int = NOT_A_DURATION
    sub: int = 0


# (metric, item): item is the payment id for payments, '' for once-per-lead facts.
FactKey = tuple[str, str]


class AggKey(NamedTuple):
    rollup: int
    grain: str
    bucket_start: datetime
    metric: str
    bin: int
    source: str
    channel: str
    campaign: str
    route: str
    definition_version: str


def floor_to(at: datetime, grain: str) -> datetime:
    """The start of the UTC bucket of `grain` holding `at`."""
    if grain == HOUR:
        return at.replace(minute=0, second=0, microsecond=0)
    if grain == DAY:
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _version(v: int | None) -> str:
    return UNKNOWN if v is None else str(v)


def lead_dims(state: LeadState) -> Dims | None:
    if state.identity is None:
        return None
    i = state.identity
    return Dims(
        i.source, i.channel, i.campaign, state.route or UNKNOWN, _version(state.definition_version)
    )


# Once-per-lead counts: (metric, the `firsts` step that makes it).
_FIRST_STEPS: tuple[tuple[str, str], ...] = (
    ("leads_contacted", "contacted"),
    ("briefs_filled", "brief"),
    *((metric, metric) for metric in FEEDBACK_METRICS.values()),
    *((metric, stage) for stage, metric in STAGE_METRICS.items()),
)
# (metric, start step, end step); the duration counts at its end.
_STEP_DURATIONS = (
    ("proposal_time", "demo_held", "proposal_sent"),
    ("contract_time", "proposal_sent", "contract_sent"),
)


def facts_of(state: LeadState, edges: tuple[int, ...] = BIN_EDGES) -> dict[FactKey, Fact]:
    """Every fact a lead contributes, given what is known of it; durations binned by `edges`
    (those of the generation's fold rules)."""
    dims = lead_dims(state)
    if dims is None:
        return {}
    # tuple.__new__ builds the named tuples without their Python-level constructor: this is
    # the fold's innermost loop.
    new = tuple.__new__
    facts: dict[FactKey, Fact] = {}
    received, firsts = state.received_at, state.firsts
    if received is not None:
        facts[("leads_received", "")] = new(Fact, (received, ONE, dims, NOT_A_DURATION, 0))
    for metric, step in _FIRST_STEPS:
        at = firsts.get(step)
        if at is not None:
            facts[(metric, "")] = new(Fact, (at, ONE, dims, NOT_A_DURATION, 0))
    for route, choice in state.routes.items():
        routed = ROUTE_METRICS.get(route)
        if routed is not None:
            own = Dims(dims.source, dims.channel, dims.campaign, route, str(choice.version))
            facts[(routed, "")] = new(Fact, (choice.at, ONE, own, NOT_A_DURATION, 0))

    def duration(metric: str, start: datetime | None, end: datetime | None) -> None:
        if start is not None and end is not None:
            seconds = seconds_between(start, end)
            facts[(metric, "")] = new(Fact, (end, seconds, dims, *bin_and_sub(seconds, edges)))

    if state.payments:
        for payment_id, p in state.payments.items():
            facts[("payments_count", payment_id)] = new(Fact, (p.at, ONE, dims, NOT_A_DURATION, 0))
            facts[("revenue", payment_id)] = new(Fact, (p.at, p.amount, dims, NOT_A_DURATION, 0))
        first_payment = min(p.at for p in state.payments.values())
        total = sum((p.amount for p in state.payments.values()), Decimal(0))
        facts[(LTV_CLIENTS, "")] = new(Fact, (first_payment, ONE, dims, NOT_A_DURATION, 0))
        facts[(LTV_REVENUE, "")] = new(Fact, (first_payment, total, dims, NOT_A_DURATION, 0))
        duration("lead_lifetime", received, first_payment)
    duration("first_response_time", received, firsts.get("contacted"))
    for metric, first, then in _STEP_DURATIONS:
        duration(metric, firsts.get(first), firsts.get(then))
    return facts


def aggregate_amount(metric: str, fact: Fact) -> Decimal:
    """What a fact adds to each of its aggregate rows: 1 to a duration's value bin (its
    seconds stay in the fact row), its value otherwise."""
    return ONE if metric in DURATION_METRICS else fact.value


def aggregate_keys(metric: str, fact: Fact) -> list[tuple[AggKey, Decimal]]:
    """The aggregate rows a fact adds to: each kept grain, by dimensions and in the totals."""
    amount = aggregate_amount(metric, fact)
    at, b, d = fact.at, fact.bin, fact.dims
    hour = at.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    month = day.replace(day=1)
    # tuple.__new__ builds the named tuple without its Python-level constructor: this runs
    # five times for every fact a batch changes.
    new = tuple.__new__
    return [
        (new(AggKey, (TOTAL, HOUR, hour, metric, b, "", "", "", "", "")), amount),
        (new(AggKey, (TOTAL, DAY, day, metric, b, "", "", "", "", "")), amount),
        (new(AggKey, (TOTAL, MONTH, month, metric, b, "", "", "", "", "")), amount),
        (new(AggKey, (BY_DIMENSIONS, DAY, day, metric, b, *d)), amount),
        (new(AggKey, (BY_DIMENSIONS, MONTH, month, metric, b, *d)), amount),
    ]


class FactDelta(NamedTuple):
    """A fact that starts counting (sign 1) or stops counting (sign -1) in the aggregates."""

    metric: str
    fact: Fact
    sign: int


def aggregate_deltas(deltas: Iterable[FactDelta]) -> dict[AggKey, Decimal]:
    """The increments of the aggregate rows that fact deltas make; rows summing to 0 left out."""
    out: defaultdict[AggKey, Decimal] = defaultdict(Decimal)
    for metric, fact, sign in deltas:
        for key, amount in aggregate_keys(metric, fact):
            out[key] += amount if sign > 0 else -amount
    return {k: v for k, v in out.items() if v}


class FineKey(NamedTuple):
    grain: str  # DAY or MONTH
    bucket_start: datetime  # the UTC day or month
    metric: str
    bin: int
    sub: int


class FineSums(NamedTuple):
    n: int  # how many durations
    total: Decimal  # of the seconds
    squares: Decimal  # of the seconds squared


def fine_count_deltas(deltas: Iterable[FactDelta]) -> dict[FineKey, FineSums]:
    """The increments of the per-day and per-month counts, sums and sums of squares of each
    duration bin's parts (kpi_fine_counts, totals only), rows adding nothing left out."""
    out: dict[FineKey, FineSums] = {}
    for metric, fact, sign in deltas:
        if fact.bin != NOT_A_DURATION:
            v = fact.value
            for grain in (DAY, MONTH):
                key = FineKey(grain, floor_to(fact.at, grain), metric, fact.bin, fact.sub)
                n, total, squares = out.get(key, (0, Decimal(0), Decimal(0)))
                out[key] = FineSums(n + sign, total + sign * v, squares + sign * v * v)
    return {k: v for k, v in out.items() if v.n or v.total or v.squares}


@dataclass
class Changes:
    """What a batch changes in one generation's tables.

    The aggregate increments are kept as the facts that changed (`fact_deltas`), five
    times fewer rows than the aggregate rows they touch: the database expands them itself
    (writes.write_changes); `aggregates` and `fine_counts` expand them here, the same way
    (the model the tests check the database against).
    """

    states: dict[str, LeadState] = field(default_factory=dict)
    delete_facts: list[tuple[str, str, str]] = field(default_factory=list)
    upsert_facts: list[tuple[str, str, str, Fact]] = field(default_factory=list)
    fact_deltas: list[FactDelta] = field(default_factory=list)

    @property
    def aggregates(self) -> dict[AggKey, Decimal]:
        return aggregate_deltas(self.fact_deltas)

    @property
    def fine_counts(self) -> dict[FineKey, FineSums]:
        return fine_count_deltas(self.fact_deltas)


def diff(
    lead_id: str,
    before: LeadState,
    after: LeadState,
    changes: Changes,
    edges: tuple[int, ...] = BIN_EDGES,
) -> None:
    old, new = facts_of(before, edges), facts_of(after, edges)
    # tuple.__new__: the FactDelta without its Python-level constructor (a hot loop).
    make = tuple.__new__
    deltas = changes.fact_deltas
    for key, fact in old.items():
        if new.get(key) != fact:
            deltas.append(make(FactDelta, (key[0], fact, -1)))
            if key not in new:
                changes.delete_facts.append((lead_id, *key))
    for key, fact in new.items():
        if old.get(key) != fact:
            deltas.append(make(FactDelta, (key[0], fact, 1)))
            changes.upsert_facts.append((lead_id, *key, fact))


def merge_events(
    states: Mapping[str, LeadState | None],
    events: Iterable[Event],
    merged: dict[str, LeadState],
) -> None:
    """Merge `events` into `merged`: each lead's state so far, else its stored one in
    `states` (which must hold every lead the events concern), else an empty one."""
    for event in events:
        if not concerns_kpi(event):
            continue
        lead_id = event.subject
        current = merged.get(lead_id) or states.get(lead_id) or LeadState(lead_id)
        merged[lead_id] = merge(current, event)


def changes_between(
    states: Mapping[str, LeadState | None],
    merged: Iterable[tuple[str, LeadState]],
    edges: tuple[int, ...] = BIN_EDGES,
) -> Changes:
    """What must be written to take the leads from their stored `states` to `merged`."""
    changes = Changes()
    for lead_id, after in merged:
        before = states.get(lead_id) or LeadState(lead_id)
        if after == before:
            continue
        changes.states[lead_id] = after
        diff(lead_id, before, after, changes, edges)
    return changes


def fold(
    states: Mapping[str, LeadState | None],
    events: Iterable[Event],
    edges: tuple[int, ...] = BIN_EDGES,
) -> Changes:
    """Merge `events` into the stored states of their leads; what must be written.

    `states` holds the stored state (or None) of every lead the events concern; `edges` are
    the value bins of the generation written (durations.bin_edges of its fold version).
    """
    merged: dict[str, LeadState] = {}
    merge_events(states, events, merged)
    return changes_between(states, merged.items(), edges)
