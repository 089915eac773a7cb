"""Read models the API answers with: a lead with its history, the sales members, a back-test."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier import repository, service
from services.qualifier.backtest import FeedbackTally, route_counts
from services.qualifier.schemas import (
    BacktestView,
    FeedbackAgreement,
    HistoryEntry,
    LeadView,
    MemberView,
    PaymentView,
    RouteChangeView,
)
from shared.events import Decision, LeadSnapshot


async def lead_view(conn: AsyncConnection, lead_id: str) -> LeadView | None:
    row = await repository.get_lead(conn, lead_id)
    if row is None:
        return None
    history = await repository.stage_history_of(conn, lead_id)
    decisions = await repository.decisions_of(conn, lead_id)
    payments = await repository.payments_of(conn, lead_id)
    return LeadView(
        lead=LeadSnapshot.model_validate(row.snapshot),
        route=row.route,
        stage=row.stage,
        team=row.team,
        assignee=row.assignee,
        sla_due_at=row.sla_due_at,
        feedback=row.feedback,
        first_contacted_at=row.first_contacted_at,
        erased=row.erased_at is not None,
        decision=Decision.model_validate(row.decision),
        decisions=[Decision.model_validate(d) for d in decisions],
        stages=[
            HistoryEntry(
                stage=h.stage,
                at=h.at,
                by=h.by,
                reason=h.reason,
                note=h.note,
                event=h.event_type,
                event_id=h.event_id,
            )
            for h in history
        ],
        payments=[
            PaymentView(
                payment_id=p.payment_id,
                lead_id=p.lead_id,
                amount=p.amount,
                currency=p.currency,
                at=p.at,
                by=p.by,
                event_id=p.event_id,
            )
            for p in payments
        ],
    )


async def members_view(conn: AsyncConnection, now: datetime) -> list[MemberView]:
    """Everyone in the active definition's teams, and anyone marked absent, with their load."""
    _, definition = await service.active(conn)
    teams: dict[str, list[str]] = {}
    for team in definition.sales_teams:
        for member in team.members:
            teams.setdefault(member, []).append(team.team)
    absences = {a.member: a for a in await repository.list_absences(conn)}
    absent_now = await repository.absent_members(conn, now)
    load = await repository.open_leads_by_assignee(conn)
    views = []
    for member in sorted({*teams, *absences}):
        absence = absences.get(member)
        views.append(
            MemberView(
                member=member, teams=teams.get(member, []), absent=member in absent_now,
                absent_until=absence.absent_until if absence and member in absent_now else None,
                note=absence.note if absence else None, open_leads=load.get(member, 0),
            )
        )  # fmt: skip
    return views


def backtest_view(number: int, run: service.BacktestRun) -> BacktestView:
    tally = run.tally
    return BacktestView(
        version=number,
        active_version=tally.active.version,
        from_=run.since,
        to=run.until,
        leads=tally.leads,
        skipped_erased=run.skipped_erased,
        routes=route_counts(tally.tested_routes),
        active_routes=route_counts(tally.active_routes),
        changed=tally.changed,
        transitions={f"{a} -> {b}": n for (a, b), n in sorted(tally.transitions.items())},
        changes=[RouteChangeView(**vars(c)) for c in tally.changes],
        feedback_leads=tally.tested_feedback.judged,
        feedback=_agreement(tally.tested_feedback),
        active_feedback=_agreement(tally.active_feedback),
    )


def _agreement(t: FeedbackTally) -> FeedbackAgreement:
    return FeedbackAgreement(
        accepted_routed_to_sales=t.accepted_to_sales,
        accepted_routed_elsewhere=t.accepted_elsewhere,
        rejected_routed_to_sales=t.rejected_to_sales,
        rejected_routed_elsewhere=t.rejected_elsewhere,
        accepted_routes=route_counts(t.accepted_routes),
        rejected_routes=route_counts(t.rejected_routes),
        agreement_rate=t.agreement_rate,
    )
