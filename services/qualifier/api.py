"""Qualifier HTTP endpoints: parse, authorize, delegate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from services.qualifier import repository
from services.qualifier.schemas import (
    DefinitionSummary,
    DefinitionView,
    LeadView,
    StageEntry,
)
from shared.auth import Principal, Scope, require
from shared.events import Decision, LeadSnapshot
from shared.runtime import Runtime

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, Depends(require(Scope.leads_read))]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/leads/{lead_id}", response_model=LeadView, tags=["leads"], responses={404: {}})
async def get_lead(request: Request, lead_id: str, _: Reader) -> LeadView:
    """The lead's decision, its explanation, and its stage history."""
    async with _runtime(request).engine.connect() as conn:
        row = await repository.get_lead(conn, lead_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no lead {lead_id!r}")
        history = await repository.stage_history_of(conn, lead_id)
        decisions = await repository.decisions_of(conn, lead_id)
    return LeadView(
        lead=LeadSnapshot.model_validate(row.snapshot),
        route=row.route,
        stage=row.stage,
        decision=Decision.model_validate(row.decision),
        decisions=[Decision.model_validate(d) for d in decisions],
        stages=[StageEntry(stage=h.stage, at=h.at, by=h.by, reason=h.reason) for h in history],
    )


@router.get("/definitions", response_model=list[DefinitionSummary], tags=["definitions"])
async def list_definitions(request: Request, _: Reader) -> list[DefinitionSummary]:
    """Every version, with who created and published it and when."""
    async with _runtime(request).engine.connect() as conn:
        rows = await repository.list_definitions(conn)
    return [DefinitionSummary.model_validate(r, from_attributes=True) for r in rows]


@router.get(
    "/definitions/{version}", response_model=DefinitionView, tags=["definitions"],
    responses={404: {}},
)  # fmt: skip
async def get_definition(request: Request, version: int, _: Reader) -> DefinitionView:
    async with _runtime(request).engine.connect() as conn:
        row = await repository.get_definition(conn, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no definition version {version}")
    return DefinitionView.model_validate(row, from_attributes=True)
