"""The rebuild endpoints: start one, follow it, cancel it."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import JSONResponse

from services.kpi.fold import rebuild
from services.kpi.schemas import RebuildOut
from services.kpi.store import generations
from services.kpi.web import Admin, runtime_of
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork

router = APIRouter(tags=["kpi"])


@router.post(
    "/v1/admin/rebuild",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RebuildOut,
    tags=["admin"],
    responses={409: {"description": "A rebuild is running already; `detail` names it"}},
)
async def start_rebuild(request: Request, who: Admin) -> JSONResponse:
    """Fold the topics again from the start into a new generation; switch once caught up.

    Answers at once (202) with the rebuild's id and its status URL; poll that until
    `status` is `done`. The current numbers keep being served (and kept fresh) meanwhile.
    """
    engine = runtime_of(request).engine
    try:
        async with engine.begin() as conn:
            generation = await rebuild.start(conn, who.name)
    except rebuild.RebuildRunning as exc:
        raise _already_running(exc.generation) from exc
    except sa.exc.IntegrityError as exc:  # another replica started one a moment ago
        async with engine.connect() as conn:
            running = await generations.building_generation(conn)
        raise _already_running(running.generation if running else 0) from exc
    waker = request.app.state.rebuilder
    if waker is not None:
        waker.wake()
    async with engine.connect() as conn:
        described = await rebuild.describe(conn, generation)
    assert described is not None
    return JSONResponse(
        RebuildOut.model_validate(described).model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": str(described["status_url"])},
    )


def _already_running(generation: int) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail={
            "msg": f"a rebuild is running already (generation {generation})",
            "rebuild_id": generation,
            "status_url": f"/v1/admin/rebuilds/{generation}",
        },
    )


@router.get("/v1/admin/rebuilds", response_model=list[RebuildOut], tags=["admin"])
async def list_rebuilds(request: Request, _: Admin) -> list[RebuildOut]:
    """Every generation, newest first: the running rebuild, the active one, and history."""
    async with runtime_of(request).engine.connect() as conn:
        found = await generations.list_generations(conn)
        described = [await rebuild.describe(conn, g.generation) for g in found]
    return [RebuildOut.model_validate(d) for d in described if d is not None]


# Rebuilds are numbered generations, PostgreSQL integers: a larger number is no rebuild,
# refused as 422 before the database would refuse the parameter (a 500).
RebuildId = Annotated[int, Path(ge=1, le=2**31 - 1, description="A rebuild (generation) number")]


@router.get("/v1/admin/rebuilds/{rebuild_id}", response_model=RebuildOut, tags=["admin"])
async def get_rebuild(request: Request, rebuild_id: RebuildId, _: Admin) -> RebuildOut:
    async with runtime_of(request).engine.connect() as conn:
        described = await rebuild.describe(conn, rebuild_id)
    if described is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rebuild {rebuild_id}")
    return RebuildOut.model_validate(described)


@router.delete("/v1/admin/rebuilds/{rebuild_id}", response_model=RebuildOut, tags=["admin"])
async def cancel_rebuild(rebuild_id: RebuildId, _: Admin, conn: UnitOfWork) -> RebuildOut:
    """Abandon a running rebuild; its rows are deleted, the active generation stays."""
    cancelled = await generations.cancel(conn, rebuild_id, utcnow())
    described = await rebuild.describe(conn, rebuild_id)
    if described is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rebuild {rebuild_id}")
    if not cancelled:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"rebuild {rebuild_id} is {described['status']}"
        )
    return RebuildOut.model_validate(described)
