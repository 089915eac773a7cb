"""The inbox: ids of applied events, written in the same transaction as their effect.

A redelivered or replayed event finds its id here and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import UtcDateTime, utcnow


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("applied_at", UtcDateTime, nullable=False),
    )


async def claim_events(
    conn: AsyncConnection, table: sa.Table, events: Sequence[tuple[str, str, str]]
) -> set[str]:
    """Record (event_id, event_type, topic) as applied; return the ids that were new.

    `ON CONFLICT DO NOTHING ... RETURNING` answers only the rows this transaction
    inserted, so two replicas racing on one event cannot both apply it.
    """
    if not events:
        return set()
    now = utcnow()
    unique = {eid: (eid, etype, topic) for eid, etype, topic in events}
    stmt = postgresql.insert(table).on_conflict_do_nothing().returning(table.c.event_id)
    result = await conn.execute(
        stmt,
        [
            {"event_id": eid, "event_type": etype, "topic": topic, "applied_at": now}
            for eid, etype, topic in unique.values()
        ],
    )
    return {row[0] for row in result}
