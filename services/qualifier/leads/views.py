"""A lead as the API shows it: its decision, earlier decisions, history and payments."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.leads import repository
from services.qualifier.leads.schemas import HistoryEntry, LeadView
from services.qualifier.lifecycle import repository as lifecycle_repository
from services.qualifier.lifecycle.schemas import PaymentView
from shared.events import Decision, LeadSnapshot


async def lead_view(conn: AsyncConnection, lead_id: str) -> LeadView | None:
    row = await repository.get_lead(conn, lead_id)
    if row is None:
        return None
    history = await repository.stage_history_of(conn, lead_id)
    decisions = await repository.decisions_of(conn, lead_id)
    payments = await lifecycle_repository.payments_of(conn, lead_id)
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
