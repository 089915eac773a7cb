"""The lead lifecycle as a state machine: which call may move a lead from where to where. Pure.

```
routed ─contact─► contacted ─brief─► (qualified again: a new routing)      route processing
routed|contacted ─feedback─► accepted | rejected(reason)                    route sales
accepted ─► sql ─► demo_held ─► proposal_sent ─► contract_sent ─► won ─► payments (many)
any open sales stage (accepted … contract_sent) ─► lost(reason)
lost | rejected ─nurture─► routed (route nurture: marketing warms the lead up again)
```

A call that asks for the stage the lead is already in (a client retrying) changes
nothing and is not an error; a call the machine does not allow raises `Refused`,
naming the current stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.events import Route, Stage

OPEN_SALES_STAGES = (
    Stage.accepted,
    Stage.sql,
    Stage.demo_held,
    Stage.proposal_sent,
    Stage.contract_sent,
)
CLOSED_STAGES = (Stage.rejected, Stage.won, Stage.lost)
# Stages a sales tool sets with `POST /stage`, in pipeline order.
PIPELINE = (
    Stage.sql,
    Stage.demo_held,
    Stage.proposal_sent,
    Stage.contract_sent,
    Stage.won,
    Stage.lost,
)
_NEXT = {
    Stage.accepted: Stage.sql,
    Stage.sql: Stage.demo_held,
    Stage.demo_held: Stage.proposal_sent,
    Stage.proposal_sent: Stage.contract_sent,
    Stage.contract_sent: Stage.won,
}
# Routes whose leads nobody contacts: a rejected lead, and one that a partner works.
_NOT_OURS = (Route.rejected, Route.partner)


@dataclass(frozen=True)
class LeadState:
    route: Route
    stage: Stage
    contacted: bool = False


@dataclass(frozen=True)
class Step:
    """Where a lead goes: its stage after the call, and whether anything changed."""

    stage: Stage
    changed: bool = True
    first_contact: bool = False


class Refused(Exception):
    """An impossible transition (HTTP 409)."""

    def __init__(self, state: LeadState, message: str) -> None:
        self.state = state
        super().__init__(
            f"{message} (current stage: {state.stage.value}, route: {state.route.value})"
        )


def contact(state: LeadState) -> Step:
    """A contact with the lead; the first one moves it to `contacted`."""
    if state.stage in CLOSED_STAGES:
        raise Refused(state, "the lead is closed; there is nobody to contact")
    if state.route in _NOT_OURS and state.stage in (Stage.routed, Stage.contacted):
        owner = (
            "rejected by the lead definition"
            if state.route is Route.rejected
            else ("routed to a partner, who contacts it")
        )
        raise Refused(state, f"the lead was {owner}")
    stage = Stage.contacted if state.stage is Stage.routed else state.stage
    return Step(stage, changed=True, first_contact=not state.contacted)


def brief(state: LeadState) -> Step:
    """Brief answers for a lead in primary processing, after its first contact."""
    if state.route is not Route.processing or state.stage not in (Stage.routed, Stage.contacted):
        raise Refused(state, "a brief is filled for leads in primary processing only")
    if state.stage is Stage.routed:
        raise Refused(state, "record the first contact (POST /contact) before the brief")
    return Step(Stage.contacted)


def feedback(state: LeadState, decision: Stage) -> Step:
    """Sales accepts (SAL) or rejects a lead routed to it."""
    if decision not in (Stage.accepted, Stage.rejected):
        raise ValueError(f"feedback is accepted or rejected, not {decision.value}")
    if state.route is Route.sales and state.stage is decision:
        return Step(decision, changed=False)
    if state.route is not Route.sales:
        raise Refused(state, "feedback is for leads routed to sales")
    if state.stage not in (Stage.routed, Stage.contacted):
        raise Refused(state, "sales already gave its feedback on this lead")
    return Step(decision)


def change_stage(state: LeadState, target: Stage) -> Step:
    """Move an accepted lead along the pipeline, one step at a time, or lose it."""
    if target not in PIPELINE:
        raise ValueError(f"{target.value} is not a pipeline stage")
    if state.stage is target and state.route is Route.sales:
        return Step(target, changed=False)
    if state.route is not Route.sales or state.stage in (Stage.routed, Stage.contacted):
        raise Refused(state, "sales must accept the lead (POST /feedback) before its pipeline")
    if target is Stage.lost:
        if state.stage in OPEN_SALES_STAGES:
            return Step(Stage.lost)
        raise Refused(state, "only an open deal can be lost")
    expected = _NEXT.get(state.stage)
    if expected is not target:
        after = f"the next stage is {expected.value}" if expected else "the deal is closed"
        raise Refused(state, f"cannot move to {target.value}: {after}")
    return Step(target)


def payment(state: LeadState) -> Step:
    """Payments come in after the deal is won, as many as the contract brings."""
    if state.stage is not Stage.won:
        raise Refused(state, "payments are recorded for won deals only")
    return Step(Stage.won)


def back_to_nurture(state: LeadState) -> Step:
    """A lost (or sales-rejected) lead goes back to marketing to be warmed up again."""
    if state.route is Route.nurture and state.stage is Stage.routed:
        return Step(Stage.routed, changed=False)
    if state.stage not in (Stage.lost, Stage.rejected):
        raise Refused(state, "only a lost or sales-rejected lead goes back to nurture")
    return Step(Stage.routed)


class InvalidTime(ValueError):
    """A business time `at` that cannot be true (HTTP 422 naming `at`)."""


def check_business_time(
    at: datetime, *, now: datetime, lead_received: datetime, skew: timedelta
) -> None:
    """`at` is when it happened: not in the future (beyond clock skew), not before the lead."""
    if at.tzinfo is None:
        raise InvalidTime("at needs a time zone (e.g. 2026-11-02T10:00:00Z)")
    if at > now + skew:
        raise InvalidTime(f"at lies in the future (now is {now.isoformat()})")
    if at < lead_received:
        raise InvalidTime(f"at is before the lead was received ({lead_received.isoformat()})")
