"""What the KPI knows about one lead, and how an event merges into it. Pure.

The merge is commutative, associative and idempotent: every field is the minimum or
maximum of a total order over events (business time, then a tie-breaker), or a set
keyed by a stable id. So a lead's state is a function of the set of its events, not of
the order Kafka delivered them in, and a redelivered event changes nothing. That is
what makes late and out-of-order events, several KPI replicas, and a rebuild that
overlaps the live consumer all give the same numbers.

The state holds no personal data: times, routes, stage names, amounts and the lead's
dimensions (source, utm source and campaign) only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.kpi.catalogue import FEEDBACK_METRICS, STAGE_METRICS
from shared.events import (
    Dimensions,
    Event,
    LeadBriefFilled,
    LeadContacted,
    LeadErased,
    LeadFeedback,
    LeadPaymentReceived,
    LeadReceived,
    LeadRouted,
    LeadSlaBreached,
    LeadStageChanged,
    LeadWebinarAttended,
)

# Dimension values are part of aggregate keys; a longer utm value is cut, not refused.
MAX_DIMENSION_LENGTH = 200

# Which event's dimensions win: the lead as intake received it, then a later snapshot
# of it, then what a lifecycle event carried (they agree unless a producer is wrong).
RANK_RECEIVED, RANK_SNAPSHOT, RANK_LIFECYCLE = 0, 1, 2


def utc(at: datetime) -> datetime:
    """Business time in UTC; a time without an offset is taken as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _cut(value: str) -> str:
    return value[:MAX_DIMENSION_LENGTH]


@dataclass(frozen=True)
class Identity:
    """The lead's source, channel and campaign, and which event said so."""

    rank: int
    at: datetime
    event_id: str
    source: str
    channel: str
    campaign: str

    def order(self) -> tuple[int, datetime, str]:
        return (self.rank, self.at, self.event_id)


@dataclass(frozen=True)
class RouteChoice:
    """One routing decision (`lead.routed`)."""

    at: datetime
    decided_at: datetime
    event_id: str
    route: str
    version: int

    def order(self) -> tuple[datetime, datetime, str]:
        return (self.at, self.decided_at, self.event_id)


@dataclass(frozen=True)
class CarriedRoute:
    """The route a lifecycle event carried: used only until a `lead.routed` is seen."""

    at: datetime
    event_id: str
    route: str
    version: int | None

    def order(self) -> tuple[datetime, str]:
        return (self.at, self.event_id)


@dataclass(frozen=True)
class Payment:
    at: datetime
    event_id: str
    amount: Decimal

    def order(self) -> tuple[datetime, str]:
        return (self.at, self.event_id)


@dataclass(frozen=True)
class LeadState:
    lead_id: str
    identity: Identity | None = None
    # The latest routing decision: the lead's current route and definition version.
    decision: RouteChoice | None = None
    carried: CarriedRoute | None = None
    received_at: datetime | None = None
    # Earliest business time of each once-per-lead step: contacted, brief, sal, sql, won...
    firsts: dict[str, datetime] = field(default_factory=dict)
    # The earliest decision for each route the lead was ever routed to.
    routes: dict[str, RouteChoice] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)

    @property
    def route(self) -> str | None:
        if self.decision is not None:
            return self.decision.route
        return None if self.carried is None else self.carried.route

    @property
    def definition_version(self) -> int | None:
        if self.decision is not None:
            return self.decision.version
        return None if self.carried is None else self.carried.version


def concerns_kpi(event: Event) -> bool:
    """Erasure changes no count and the KPI holds no personal data: nothing to fold."""
    return not isinstance(event, LeadErased)


def _replace(state: LeadState, **changes: Any) -> LeadState:
    """`dataclasses.replace` without running `__init__` (a frozen dataclass's sets each
    field through `object.__setattr__`): a merge replaces a state once or twice an event,
    the fold's innermost loop."""
    new = object.__new__(LeadState)
    fields = new.__dict__
    fields.update(state.__dict__)
    fields.update(changes)
    return new


def _earlier(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _with_identity(
    state: LeadState, rank: int, at: datetime, event_id: str, dims: Dimensions
) -> LeadState:
    candidate = Identity(
        rank, at, event_id, _cut(dims.source), _cut(dims.channel), _cut(dims.campaign)
    )
    if state.identity is None or candidate.order() < state.identity.order():
        return _replace(state, identity=candidate)
    return state


def _with_carried(state: LeadState, at: datetime, event_id: str, dims: Dimensions) -> LeadState:
    if dims.route is None:
        return state
    candidate = CarriedRoute(at, event_id, _cut(dims.route), dims.definition_version)
    if state.carried is None or candidate.order() > state.carried.order():
        return _replace(state, carried=candidate)
    return state


def _with_first(state: LeadState, step: str, at: datetime) -> LeadState:
    first = _earlier(state.firsts.get(step), at)
    if state.firsts.get(step) == first:
        return state
    return _replace(state, firsts={**state.firsts, step: first})


def merge(state: LeadState, event: Event) -> LeadState:
    """The state after also knowing `event`; the same state if it adds nothing."""
    at = utc(event.time)
    if isinstance(event, LeadReceived):
        state = _with_identity(state, RANK_RECEIVED, at, event.id, event.data.dimensions())
        received = _earlier(state.received_at, at)
        if received != state.received_at:
            state = _replace(state, received_at=received)
        return state
    if isinstance(event, LeadWebinarAttended):
        return _with_identity(state, RANK_SNAPSHOT, at, event.id, event.data.dimensions())
    if isinstance(event, LeadRouted):
        state = _with_identity(state, RANK_SNAPSHOT, at, event.id, event.data.dimensions())
        d = event.data.decision
        choice = RouteChoice(at, utc(d.decided_at), event.id, d.route.value, d.definition_version)
        if state.decision is None or choice.order() > state.decision.order():
            state = _replace(state, decision=choice)
        first = state.routes.get(choice.route)
        if first is None or choice.order() < first.order():
            state = _replace(state, routes={**state.routes, choice.route: choice})
        return state
    if isinstance(event, LeadErased):
        return state
    dims = event.data.dimensions
    state = _with_identity(state, RANK_LIFECYCLE, at, event.id, dims)
    state = _with_carried(state, at, event.id, dims)
    if isinstance(event, LeadContacted):
        # The earliest contact in business time is the first, whatever the flag says:
        # a contact reported late with an earlier `at` is still the first one.
        return _with_first(state, "contacted", at)
    if isinstance(event, LeadBriefFilled):
        return _with_first(state, "brief", at)
    if isinstance(event, LeadFeedback):
        return _with_first(state, FEEDBACK_METRICS[event.data.decision], at)
    if isinstance(event, LeadStageChanged):
        stage = event.data.stage.value
        return _with_first(state, stage, at) if stage in STAGE_METRICS else state
    if isinstance(event, LeadPaymentReceived):
        data = event.data
        candidate = Payment(at, event.id, data.amount)
        known = state.payments.get(data.payment_id)
        if known is None or candidate.order() < known.order():
            state = _replace(state, payments={**state.payments, data.payment_id: candidate})
        return state
    if isinstance(event, LeadSlaBreached):
        return state
    raise TypeError(f"unhandled event type {event.type}")  # pragma: no cover


def _least(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None or a.order() <= b.order() else b


def _greatest(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None or a.order() >= b.order() else b


def _sooner(a: datetime | None, b: datetime | None) -> datetime | None:
    return a if b is None else _earlier(a, b)


def _per_key(a: dict[str, Any], b: dict[str, Any], pick: Any) -> dict[str, Any]:
    if not b:
        return a
    if not a:
        return b
    return {k: pick(a.get(k), b.get(k)) for k in a.keys() | b.keys()}


def join(a: LeadState, b: LeadState) -> LeadState:
    """The state of a lead knowing the events of both `a` and `b` (of the same lead): each
    field is the least or greatest of the two, per key for the sets. So folding events into
    an empty state apart from the stored one and joining the two afterwards is the same as
    merging them into the stored state one by one (a fold window reads that way)."""
    if b == LeadState(b.lead_id):
        return a
    return LeadState(
        lead_id=a.lead_id,
        identity=_least(a.identity, b.identity),
        decision=_greatest(a.decision, b.decision),
        carried=_greatest(a.carried, b.carried),
        received_at=_sooner(a.received_at, b.received_at),
        firsts=_per_key(a.firsts, b.firsts, _sooner),
        routes=_per_key(a.routes, b.routes, _least),
        payments=_per_key(a.payments, b.payments, _least),
    )


# Serialization: one JSON object per lead, short keys (a million leads are kept).


def _t(at: datetime) -> str:
    return at.isoformat()


def _parse_t(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))


def _choice_out(c: RouteChoice) -> list[Any]:
    return [_t(c.at), _t(c.decided_at), c.event_id, c.route, c.version]


def _choice_in(v: list[Any]) -> RouteChoice:
    return RouteChoice(_parse_t(v[0]), _parse_t(v[1]), v[2], v[3], int(v[4]))


def to_json(state: LeadState) -> dict[str, Any]:
    out: dict[str, Any] = {"v": 1}
    if (i := state.identity) is not None:
        out["id"] = [i.rank, _t(i.at), i.event_id, i.source, i.channel, i.campaign]
    if state.decision is not None:
        out["dec"] = _choice_out(state.decision)
    if (c := state.carried) is not None:
        out["car"] = [_t(c.at), c.event_id, c.route, c.version]
    if state.received_at is not None:
        out["rcv"] = _t(state.received_at)
    if state.firsts:
        out["first"] = {k: _t(v) for k, v in sorted(state.firsts.items())}
    if state.routes:
        out["routes"] = {k: _choice_out(v) for k, v in sorted(state.routes.items())}
    if state.payments:
        out["pay"] = {
            k: [_t(p.at), p.event_id, str(p.amount)] for k, p in sorted(state.payments.items())
        }
    return out


def from_json(lead_id: str, doc: dict[str, Any] | None) -> LeadState:
    if not doc:
        return LeadState(lead_id)
    identity = None
    if "id" in doc:
        r, at, eid, source, channel, campaign = doc["id"]
        identity = Identity(int(r), _parse_t(at), eid, source, channel, campaign)
    carried = None
    if "car" in doc:
        at, eid, route, version = doc["car"]
        carried = CarriedRoute(_parse_t(at), eid, route, None if version is None else int(version))
    return LeadState(
        lead_id=lead_id,
        identity=identity,
        decision=_choice_in(doc["dec"]) if "dec" in doc else None,
        carried=carried,
        received_at=_parse_t(doc["rcv"]) if "rcv" in doc else None,
        firsts={k: _parse_t(v) for k, v in doc.get("first", {}).items()},
        routes={k: _choice_in(v) for k, v in doc.get("routes", {}).items()},
        payments={
            k: Payment(_parse_t(v[0]), v[1], Decimal(v[2])) for k, v in doc.get("pay", {}).items()
        },
    )
