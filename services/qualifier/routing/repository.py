"""Decided leads and their assignment: round-robin counters, loads, and the rows a run of
decisions writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import decisions, leads, round_robin, stage_history
from shared.db import in_list
from shared.events import Decision, LeadSnapshot, Route, Stage

# Advisory lock id: a transaction-scoped lock that serializes assignment across replicas.
_ROUND_ROBIN_LOCK = 0x1EAD0A55


async def round_robin_counters(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(sa.select(round_robin.c.team, round_robin.c.next_index))
    return {team: index for team, index in rows}


async def lock_round_robin(conn: AsyncConnection) -> None:
    """Replicas assigning at once would hand two leads to the same person."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_ROUND_ROBIN_LOCK)))


async def set_round_robin(conn: AsyncConnection, team: str, next_index: int) -> None:
    updated = await conn.execute(
        round_robin.update().where(round_robin.c.team == team).values(next_index=next_index)
    )
    if not updated.rowcount:
        await conn.execute(round_robin.insert().values(team=team, next_index=next_index))


async def open_leads_by_assignee(conn: AsyncConnection) -> dict[str, int]:
    """Leads each person holds that still wait for sales: routed or contacted, no feedback."""
    open_stages = [Stage.routed.value, Stage.contacted.value]
    rows = await conn.execute(
        sa.select(leads.c.assignee, sa.func.count())
        .where(
            leads.c.assignee.is_not(None),
            leads.c.route == Route.sales.value,
            leads.c.stage.in_(open_stages),
        )
        .group_by(leads.c.assignee)
    )
    return {assignee: count for assignee, count in rows}


def lead_row(
    lead: LeadSnapshot,
    stored_snapshot: dict[str, Any],
    decision: Decision,
    stage: Stage,
    now: datetime,
) -> dict[str, Any]:
    """A decided lead's columns (insert or update)."""
    return {
        "snapshot": stored_snapshot,
        "received_at": lead.received_at,
        "route": decision.route.value,
        "stage": stage.value,
        "definition_version": decision.definition_version,
        "team": decision.team,
        "assignee": decision.assignee,
        "sla_due_at": decision.sla_due_at,
        "decision": decision.model_dump(mode="json"),
        "updated_at": now,
    }


def decision_row(lead_id: str, decision: Decision, cause_event_id: str) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "definition_version": decision.definition_version,
        "route": decision.route.value,
        "score": decision.score,
        "decision": decision.model_dump(mode="json"),
        "decided_at": decision.decided_at,
        "cause_event_id": cause_event_id,
    }


async def save_decision(
    conn: AsyncConnection,
    *,
    lead: LeadSnapshot,
    stored_snapshot: dict[str, Any],
    decision: Decision,
    stage: Stage,
    cause_event_id: str,
    now: datetime,
) -> None:
    """Store the lead with its current decision, and the decision in its history."""
    values = lead_row(lead, stored_snapshot, decision, stage, now)
    updated = await conn.execute(
        leads.update().where(leads.c.lead_id == lead.lead_id).values(**values)
    )
    if not updated.rowcount:
        await conn.execute(leads.insert().values(lead_id=lead.lead_id, **values))
    await conn.execute(
        decisions.insert().values(decision_row(lead.lead_id, decision, cause_event_id))
    )


async def insert_decided(
    conn: AsyncConnection,
    lead_rows: Sequence[dict[str, Any]],
    decision_rows: Sequence[dict[str, Any]],
    history_rows: Sequence[dict[str, Any]],
) -> None:
    """Leads decided for the first time (`lead_row` plus lead_id), and the decisions and
    history rows of a run of decisions, in three multi-row statements."""
    for table, rows in (
        (leads, lead_rows),
        (decisions, decision_rows),
        (stage_history, history_rows),
    ):
        if rows:
            await conn.execute(table.insert(), list(rows))


async def current_decisions(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, Any]:
    """The current decision of each of these leads that is already stored."""
    rows = await conn.execute(
        sa.select(leads.c.lead_id, leads.c.decision).where(in_list(conn, leads.c.lead_id, lead_ids))
    )
    return {lead_id: decision for lead_id, decision in rows}
