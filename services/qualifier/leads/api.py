"""The lead endpoint: a lead's decision, its explanation and its history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from services.qualifier.deps import Reader, runtime
from services.qualifier.leads.schemas import LeadView
from services.qualifier.leads.views import lead_view

router = APIRouter(prefix="/v1", tags=["leads"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such lead"}}


@router.get("/leads/{lead_id}", response_model=LeadView, responses=_NOT_FOUND)
async def get_lead(request: Request, lead_id: str, _: Reader) -> LeadView:
    """The lead's decision, its explanation, and its history (stages, contacts, payments)."""
    async with runtime(request).engine.connect() as conn:
        view = await lead_view(conn, lead_id)
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no lead {lead_id!r}")
    return view
