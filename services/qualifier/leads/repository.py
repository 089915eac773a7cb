"""A lead's record: its row, its history, its decisions; and what erasure clears."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import decisions, erasures, leads, outbox, stage_history
from shared.db import AnyRow, in_list
from shared.events import Stage
from shared.outbox import pending_of


async def get_lead(conn: AsyncConnection, lead_id: str) -> AnyRow | None:
    return (await conn.execute(sa.select(leads).where(leads.c.lead_id == lead_id))).first()


async def lock_lead(conn: AsyncConnection, lead_id: str, *, share: bool = False) -> AnyRow | None:
    """The lead, locked for this transaction: two calls on one lead apply one after the other.
    `share`: only against a change (an erasure) committing meanwhile; readers still read."""
    stmt = sa.select(leads).where(leads.c.lead_id == lead_id).with_for_update(read=share)
    return (await conn.execute(stmt)).first()


async def update_snapshot(
    conn: AsyncConnection, lead_id: str, snapshot: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        leads.update().where(leads.c.lead_id == lead_id).values(snapshot=snapshot, updated_at=now)
    )


async def update_lead(conn: AsyncConnection, lead_id: str, **values: Any) -> None:
    await conn.execute(leads.update().where(leads.c.lead_id == lead_id).values(**values))


def history_row(
    *,
    lead_id: str,
    stage: Stage,
    at: datetime,
    by: str | None,
    event_id: str,
    event_type: str,
    reason: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "stage": stage.value,
        "at": at,
        "by": by,
        "reason": reason,
        "note": note,
        "event_id": event_id,
        "event_type": event_type,
    }


async def add_history(
    conn: AsyncConnection,
    *,
    lead_id: str,
    stage: Stage,
    at: datetime,
    by: str | None,
    event_id: str,
    event_type: str,
    reason: str | None = None,
    note: str | None = None,
) -> None:
    await conn.execute(
        stage_history.insert().values(
            history_row(
                lead_id=lead_id,
                stage=stage,
                at=at,
                by=by,
                reason=reason,
                note=note,
                event_id=event_id,
                event_type=event_type,
            )
        )
    )


async def stage_history_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    h = stage_history
    return list(
        (
            await conn.execute(
                sa.select(
                    h.c.stage, h.c.at, h.c.by, h.c.reason, h.c.note, h.c.event_type, h.c.event_id
                )
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


async def record_erasure(
    conn: AsyncConnection, lead_id: str, erased_at: datetime, event_id: str
) -> None:
    await conn.execute(
        postgresql.insert(erasures)
        .on_conflict_do_nothing()
        .values(lead_id=lead_id, erased_at=erased_at, event_id=event_id)
    )


async def erasure_of(conn: AsyncConnection, lead_id: str) -> datetime | None:
    erased: datetime | None = await conn.scalar(
        sa.select(erasures.c.erased_at).where(erasures.c.lead_id == lead_id)
    )
    return erased


async def erasures_of(conn: AsyncConnection, lead_ids: Sequence[str]) -> dict[str, datetime]:
    rows = await conn.execute(
        sa.select(erasures.c.lead_id, erasures.c.erased_at).where(
            in_list(conn, erasures.c.lead_id, lead_ids)
        )
    )
    return {lead_id: at for lead_id, at in rows}


async def erase_history_text(conn: AsyncConnection, lead_id: str) -> None:
    """The lead's history keeps its stages, times and who; the words go (notes sales
    wrote, reasons that may repeat what the person said)."""
    await conn.execute(
        stage_history.update()
        .where(stage_history.c.lead_id == lead_id)
        .values(note=None, reason=None)
    )


async def pending_events_of(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    """The lead's events still in the outbox, safe to rewrite (`shared.outbox.pending_of`)."""
    return await pending_of(conn, outbox, lead_id)


async def replace_pending_payload(conn: AsyncConnection, row_id: int, payload: bytes) -> None:
    await conn.execute(outbox.update().where(outbox.c.id == row_id).values(payload=payload))
