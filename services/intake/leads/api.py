"""Reading a stored lead back (scope `leads:read`)."""

from __future__ import annotations

from fastapi import APIRouter

from services.intake.deps import Reader, RuntimeDep
from services.intake.errors import JsonBodyRoute
from services.intake.leads import repository
from services.intake.leads.schemas import StoredLead
from shared.events import LeadSnapshot
from shared.web import problem

router = APIRouter(prefix="/v1", tags=["leads"], route_class=JsonBodyRoute)


@router.get("/leads/{lead_id}", response_model=StoredLead, responses={404: {}})
async def get_lead(lead_id: str, _: Reader, runtime: RuntimeDep) -> StoredLead:
    """What intake holds for one lead (after erasure: the lead without the person)."""
    async with runtime.engine.connect() as conn:
        row = await repository.get_lead(conn, lead_id)
    if row is None:
        raise problem(404, ["path", "lead_id"], f"no lead {lead_id!r}", "not_found")
    return StoredLead(
        lead=LeadSnapshot.model_validate(row.snapshot), erased=row.erased_at is not None
    )
