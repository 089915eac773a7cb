"""CRM tables: connectors, the lead -> record map, pulls owed, vendor event ids taken."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.tables import crm_connectors, crm_notices, crm_pulls, crm_records
from shared.db import AnyRow

# Connectors


async def save_connector(
    conn: AsyncConnection,
    *,
    connector_id: str,
    kind: str,
    document: dict[str, Any],
    source_text: str,
    by: str | None,
    now: datetime,
) -> bool:
    """Insert or replace a connector's configuration; True when it is new. Its sync state
    (how far reconciliation got) stays."""
    c = crm_connectors
    stmt = postgresql.insert(c).values(
        id=connector_id,
        kind=kind,
        document=document,
        source_text=source_text,
        created_at=now,
        updated_at=now,
        updated_by=by,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[c.c.id],
        set_={
            "kind": stmt.excluded.kind,
            "document": stmt.excluded.document,
            "source_text": stmt.excluded.source_text,
            "updated_at": stmt.excluded.updated_at,
            "updated_by": stmt.excluded.updated_by,
        },
    ).returning(c.c.created_at == c.c.updated_at)
    created: bool = (await conn.execute(upsert)).scalar_one()
    return created


async def connectors(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(sa.select(crm_connectors).order_by(crm_connectors.c.id))).all())


async def connector(
    conn: AsyncConnection, connector_id: str, *, for_update: bool = False
) -> AnyRow | None:
    stmt = sa.select(crm_connectors).where(crm_connectors.c.id == connector_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


async def delete_connector(conn: AsyncConnection, connector_id: str) -> bool:
    c = crm_connectors
    deleted = await conn.execute(c.delete().where(c.c.id == connector_id))
    await conn.execute(crm_pulls.delete().where(crm_pulls.c.connector_id == connector_id))
    return deleted.rowcount == 1


async def record_sync(
    conn: AsyncConnection, connector_id: str, *, synced_until: datetime | None, now: datetime
) -> None:
    c = crm_connectors
    values: dict[str, Any] = {"last_sync_at": now}
    if synced_until is not None:
        values["synced_until"] = sa.func.greatest(
            sa.func.coalesce(c.c.synced_until, synced_until), synced_until
        )
    await conn.execute(c.update().where(c.c.id == connector_id).values(**values))


async def record_error(conn: AsyncConnection, connector_id: str, error: str, now: datetime) -> None:
    c = crm_connectors
    await conn.execute(
        c.update().where(c.c.id == connector_id).values(last_error=error, last_error_at=now)
    )


# The lead -> record map


async def record_of_lead(conn: AsyncConnection, connector_id: str, lead_id: str) -> AnyRow | None:
    r = crm_records
    return (
        await conn.execute(
            sa.select(r).where(r.c.connector_id == connector_id, r.c.lead_id == lead_id)
        )
    ).first()


async def lead_of_record(conn: AsyncConnection, connector_id: str, crm_id: str) -> AnyRow | None:
    r = crm_records
    return (
        await conn.execute(
            sa.select(r).where(r.c.connector_id == connector_id, r.c.crm_id == crm_id)
        )
    ).first()


async def remember_record(
    conn: AsyncConnection, *, connector_id: str, lead_id: str, crm_id: str, now: datetime
) -> None:
    r = crm_records
    stmt = postgresql.insert(r).values(
        connector_id=connector_id, lead_id=lead_id, crm_id=crm_id, pushed_at=now, updated_at=now
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[r.c.connector_id, r.c.lead_id],
            set_={"crm_id": stmt.excluded.crm_id, "updated_at": stmt.excluded.updated_at},
        )
    )


async def note_stage(
    conn: AsyncConnection,
    *,
    connector_id: str,
    lead_id: str,
    stage: str,
    skipped: str | None,
    now: datetime,
) -> None:
    r = crm_records
    await conn.execute(
        r.update()
        .where(r.c.connector_id == connector_id, r.c.lead_id == lead_id)
        .values(stage=stage, skipped=skipped, updated_at=now)
    )


async def records_of_lead(conn: AsyncConnection, lead_id: str) -> list[AnyRow]:
    r = crm_records
    return list((await conn.execute(sa.select(r).where(r.c.lead_id == lead_id))).all())


async def mark_erased(
    conn: AsyncConnection, connector_id: str, lead_id: str, now: datetime
) -> None:
    r = crm_records
    await conn.execute(
        r.update()
        .where(r.c.connector_id == connector_id, r.c.lead_id == lead_id)
        .values(erased_at=now, updated_at=now)
    )


async def record_counts(conn: AsyncConnection, connector_id: str) -> tuple[int, int]:
    """(records pushed, of them with a change that could not be applied)."""
    r = crm_records
    row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.count(r.c.skipped)).where(
                r.c.connector_id == connector_id
            )
        )
    ).one()
    return int(row[0]), int(row[1])


# Pulls: records a notification named, read back by the puller


async def owe_pulls(
    conn: AsyncConnection, connector_id: str, crm_ids: list[str], now: datetime
) -> None:
    """One pull per record, however many notifications name it; an owed one stays owed."""
    if not crm_ids:
        return
    p = crm_pulls
    rows = [
        {
            "connector_id": connector_id,
            "crm_id": crm_id,
            "requested_at": now,
            "next_attempt_at": now,
        }
        for crm_id in dict.fromkeys(crm_ids)
    ]
    stmt = postgresql.insert(p).values(rows)
    # A pull leased right now may read the record before this change: due again at once.
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[p.c.connector_id, p.c.crm_id],
            set_={
                "requested_at": stmt.excluded.requested_at,
                "claim_token": None,
                "next_attempt_at": stmt.excluded.next_attempt_at,
            },
        )
    )


async def claim_pulls(
    conn: AsyncConnection, *, token: str, now: datetime, lease_until: datetime, limit: int
) -> list[AnyRow]:
    """Lease due pulls (SKIP LOCKED: replicas take different ones)."""
    p = crm_pulls
    due = (
        sa.select(p.c.connector_id, p.c.crm_id)
        .where(p.c.next_attempt_at <= now)
        .order_by(p.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    stmt = (
        p.update()
        .where(p.c.connector_id == due.c.connector_id, p.c.crm_id == due.c.crm_id)
        .values(claim_token=token, next_attempt_at=lease_until, attempts=p.c.attempts + 1)
        .returning(p.c.connector_id, p.c.crm_id, p.c.attempts, p.c.requested_at)
    )
    return list((await conn.execute(stmt)).all())


async def finish_pull(conn: AsyncConnection, connector_id: str, crm_id: str, *, token: str) -> None:
    """Done, unless a notification came meanwhile (it cleared the lease: read it again)."""
    p = crm_pulls
    await conn.execute(
        p.delete().where(
            p.c.connector_id == connector_id, p.c.crm_id == crm_id, p.c.claim_token == token
        )
    )


async def retry_pull(
    conn: AsyncConnection, connector_id: str, crm_id: str, *, token: str, due: datetime, error: str
) -> None:
    p = crm_pulls
    await conn.execute(
        p.update()
        .where(p.c.connector_id == connector_id, p.c.crm_id == crm_id, p.c.claim_token == token)
        .values(claim_token=None, next_attempt_at=due, last_error=error)
    )


async def next_pull_due(conn: AsyncConnection) -> datetime | None:
    due: datetime | None = await conn.scalar(sa.select(sa.func.min(crm_pulls.c.next_attempt_at)))
    return due


async def pulls_owed(conn: AsyncConnection, connector_id: str) -> int:
    p = crm_pulls
    return int(
        await conn.scalar(sa.select(sa.func.count()).where(p.c.connector_id == connector_id)) or 0
    )


# Vendor event ids


async def take_notices(
    conn: AsyncConnection, connector_id: str, keys: list[str], now: datetime
) -> set[str]:
    """The keys not seen before (now remembered)."""
    if not keys:
        return set()
    n = crm_notices
    stmt = (
        postgresql.insert(n)
        .values([{"connector_id": connector_id, "key": k, "received_at": now} for k in set(keys)])
        .on_conflict_do_nothing()
        .returning(n.c.key)
    )
    return set((await conn.execute(stmt)).scalars())


async def forget_notices_before(conn: AsyncConnection, before: datetime) -> int:
    n = crm_notices
    return (await conn.execute(n.delete().where(n.c.received_at < before))).rowcount
