"""`DELETE /v1/leads/{lead_id}/personal-data` (scope `definitions:admin`)."""

from __future__ import annotations

from fastapi import APIRouter

from services.intake.deps import Admin
from services.intake.erasure import service
from services.intake.erasure.schemas import ErasureResult
from services.intake.errors import JsonBodyRoute
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import problem

router = APIRouter(prefix="/v1", tags=["leads"], route_class=JsonBodyRoute)


@router.delete(
    "/leads/{lead_id}/personal-data",
    response_model=ErasureResult,
    responses={404: {"description": "no such lead"}},
)
async def erase_personal_data(lead_id: str, principal: Admin, conn: UnitOfWork) -> ErasureResult:
    """Erasure on request: the person's data leaves intake's store and `lead.erased` tells
    the other services, in one transaction. Id, source, UTM and times stay, so counts do."""
    result = await service.erase_personal_data(conn, lead_id, by=principal.name, now=utcnow())
    if result is None:
        raise problem(404, ["path", "lead_id"], f"no lead {lead_id!r}", "not_found")
    return result
