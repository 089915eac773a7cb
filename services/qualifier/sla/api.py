"""Sales members endpoints: teams, load, and absences that assignment skips."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.qualifier.deps import Reader, SalesTool, runtime
from services.qualifier.sla import repository
from services.qualifier.sla.schemas import AbsenceIn, MemberView
from services.qualifier.sla.service import members_view
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import unprocessable

router = APIRouter(prefix="/v1", tags=["sales"])


@router.get("/sales/members", response_model=list[MemberView])
async def list_members(request: Request, _: Reader) -> list[MemberView]:
    """The active definition's sales people: teams, absence, and open leads they hold."""
    async with runtime(request).engine.connect() as conn:
        return await members_view(conn, utcnow())


@router.put("/sales/members/{member}/absence", response_model=MemberView)
async def set_absence(
    member: str, body: AbsenceIn, principal: SalesTool, conn: UnitOfWork
) -> MemberView:
    """Mark someone absent (until a time, or until marked back): assignment skips them."""
    now = utcnow()
    if body.absent and body.until is not None and body.until <= now:
        raise unprocessable(["body", "until"], "until lies in the past")
    await repository.set_absence(
        conn,
        member,
        absent=body.absent,
        until=body.until,
        note=body.note,
        now=now,
        by=principal.name,
    )
    members = await members_view(conn, now)
    return next(m for m in members if m.member == member)
