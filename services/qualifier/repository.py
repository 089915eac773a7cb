"""Every query of the qualifier service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import decisions, definitions, leads, round_robin, stage_history
from shared.db import AnyRow, insert_ignoring_conflicts, is_postgres
from shared.events import Decision, LeadSnapshot, Stage


async def active_definition(conn: AsyncConnection) -> AnyRow | None:
    return (
        await conn.execute(
            sa.select(definitions.c.version, definitions.c.document).where(
                definitions.c.status == "active"
            )
        )
    ).first()


async def has_definitions(conn: AsyncConnection) -> bool:
    return bool(await conn.scalar(sa.select(sa.func.count()).select_from(definitions)))


async def insert_definition(
    conn: AsyncConnection,
    *,
    version: int,
    name: str,
    status: str,
    document: dict[str, Any],
    source_text: str,
    at: datetime,
    by: str | None,
) -> bool:
    """Insert a definition version; False if that version exists already (a racing replica)."""
    result = await conn.execute(
        insert_ignoring_conflicts(conn, definitions).values(
            version=version, name=name, status=status, document=document,
            source_text=source_text, created_at=at, created_by=by,
            published_at=at if status == "active" else None,
            published_by=by if status == "active" else None,
        )
    )  # fmt: skip
    return bool(result.rowcount)


async def list_definitions(conn: AsyncConnection) -> list[AnyRow]:
    d = definitions
    return list(
        (
            await conn.execute(
                sa.select(d.c.version, d.c.name, d.c.status, d.c.created_at, d.c.created_by,
                          d.c.published_at, d.c.published_by).order_by(d.c.version)
            )
        ).all()
    )  # fmt: skip


async def get_definition(conn: AsyncConnection, version: int) -> AnyRow | None:
    return (
        await conn.execute(sa.select(definitions).where(definitions.c.version == version))
    ).first()


async def round_robin_counters(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(sa.select(round_robin.c.team, round_robin.c.next_index))
    return {team: index for team, index in rows}


async def lock_round_robin(conn: AsyncConnection) -> None:
    """Replicas assigning at once would hand two leads to the same person."""
    if is_postgres(conn):
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(0x1EAD0A55)))


async def set_round_robin(conn: AsyncConnection, team: str, next_index: int) -> None:
    updated = await conn.execute(
        round_robin.update().where(round_robin.c.team == team).values(next_index=next_index)
    )
    if not updated.rowcount:
        await conn.execute(round_robin.insert().values(team=team, next_index=next_index))


async def open_leads_by_assignee(conn: AsyncConnection) -> dict[str, int]:
    open_stages = [Stage.routed.value, Stage.contacted.value]
    rows = await conn.execute(
        sa.select(leads.c.assignee, sa.func.count())
        .where(leads.c.assignee.is_not(None), leads.c.stage.in_(open_stages))
        .group_by(leads.c.assignee)
    )
    return {assignee: count for assignee, count in rows}


async def save_decision(
    conn: AsyncConnection,
    *,
    lead: LeadSnapshot,
    decision: Decision,
    cause_event_id: str,
    now: datetime,
) -> None:
    """Store the lead with its current decision, and the decision in its history."""
    values = {
        "snapshot": lead.model_dump(mode="json"),
        "received_at": lead.received_at,
        "route": decision.route.value,
        "stage": Stage.routed.value,
        "definition_version": decision.definition_version,
        "team": decision.team,
        "assignee": decision.assignee,
        "sla_due_at": decision.sla_due_at,
        "decision": decision.model_dump(mode="json"),
        "updated_at": now,
    }
    updated = await conn.execute(
        leads.update().where(leads.c.lead_id == lead.lead_id).values(**values)
    )
    if not updated.rowcount:
        await conn.execute(leads.insert().values(lead_id=lead.lead_id, **values))
    await conn.execute(
        decisions.insert().values(
            lead_id=lead.lead_id, definition_version=decision.definition_version,
            route=decision.route.value, score=decision.score,
            decision=decision.model_dump(mode="json"), decided_at=decision.decided_at,
            cause_event_id=cause_event_id,
        )
    )  # fmt: skip
    await conn.execute(
        stage_history.insert().values(
            lead_id=lead.lead_id, stage=Stage.routed.value, at=decision.decided_at,
            by="qualifier", reason="; ".join(decision.reasons), event_id=cause_event_id,
        )
    )  # fmt: skip


async def get_lead(conn: AsyncConnection, lead_id: str) -> AnyRow | None:
    return (await conn.execute(sa.select(leads).where(leads.c.lead_id == lead_id))).first()


async def stage_history_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    h = stage_history
    return list(
        (
            await conn.execute(
                sa.select(h.c.stage, h.c.at, h.c.by, h.c.reason)
                .where(h.c.lead_id == lead_id)
                .order_by(h.c.at, h.c.id)
            )
        ).all()
    )


async def decisions_of(conn: AsyncConnection, lead_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        sa.select(decisions.c.decision)
        .where(decisions.c.lead_id == lead_id)
        .order_by(decisions.c.id)
    )
    return [r[0] for r in rows]
