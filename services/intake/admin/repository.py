"""Queries of form and webinar configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.tables import forms, webinars
from shared.db import AnyRow


async def get_form(conn: AsyncConnection, form_id: str) -> AnyRow | None:
    return (await conn.execute(sa.select(forms).where(forms.c.form_id == form_id))).first()


async def list_forms(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(sa.select(forms).order_by(forms.c.form_id))).all())


async def put_form(
    conn: AsyncConnection, form_id: str, values: dict[str, Any], now: datetime
) -> bool:
    """Create or replace a form's configuration; True when it was created."""
    exists = await conn.scalar(sa.select(forms.c.form_id).where(forms.c.form_id == form_id))
    if exists is None:
        await conn.execute(
            forms.insert().values(form_id=form_id, created_at=now, updated_at=now, **values)
        )
        return True
    await conn.execute(
        forms.update().where(forms.c.form_id == form_id).values(updated_at=now, **values)
    )
    return False


async def insert_form_if_absent(
    conn: AsyncConnection, form_id: str, values: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        postgresql.insert(forms)
        .on_conflict_do_nothing()
        .values(form_id=form_id, created_at=now, updated_at=now, **values)
    )


async def delete_form(conn: AsyncConnection, form_id: str) -> bool:
    result = await conn.execute(sa.delete(forms).where(forms.c.form_id == form_id))
    return bool(result.rowcount)


async def get_webinar(conn: AsyncConnection, webinar_id: str) -> AnyRow | None:
    return (
        await conn.execute(sa.select(webinars).where(webinars.c.webinar_id == webinar_id))
    ).first()


async def get_webinar_by_zoom_id(conn: AsyncConnection, zoom_webinar_id: str) -> AnyRow | None:
    return (
        await conn.execute(sa.select(webinars).where(webinars.c.zoom_webinar_id == zoom_webinar_id))
    ).first()


async def list_webinars(conn: AsyncConnection) -> list[AnyRow]:
    return list((await conn.execute(sa.select(webinars).order_by(webinars.c.webinar_id))).all())


async def zoom_id_taken_by(
    conn: AsyncConnection, zoom_webinar_id: str, webinar_id: str
) -> str | None:
    """Another webinar linked to this Zoom webinar, if any."""
    return await conn.scalar(
        sa.select(webinars.c.webinar_id).where(
            webinars.c.zoom_webinar_id == zoom_webinar_id, webinars.c.webinar_id != webinar_id
        )
    )


async def put_webinar(
    conn: AsyncConnection, webinar_id: str, values: dict[str, Any], now: datetime
) -> bool:
    exists = await conn.scalar(
        sa.select(webinars.c.webinar_id).where(webinars.c.webinar_id == webinar_id)
    )
    if exists is None:
        await conn.execute(
            webinars.insert().values(
                webinar_id=webinar_id, created_at=now, updated_at=now, **values
            )
        )
        return True
    await conn.execute(
        webinars.update()
        .where(webinars.c.webinar_id == webinar_id)
        .values(updated_at=now, **values)
    )
    return False


async def insert_webinar_if_absent(
    conn: AsyncConnection, webinar_id: str, values: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        postgresql.insert(webinars)
        .on_conflict_do_nothing()
        .values(webinar_id=webinar_id, created_at=now, updated_at=now, **values)
    )


async def delete_webinar(conn: AsyncConnection, webinar_id: str) -> bool:
    result = await conn.execute(sa.delete(webinars).where(webinars.c.webinar_id == webinar_id))
    return bool(result.rowcount)
