"""Partner delivery endpoints: what was sent where, and sending a parked one again."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status

from services.qualifier.deps import Admin, conflict, runtime
from services.qualifier.partners import deliveries, repository
from services.qualifier.partners.schemas import DeliveryView
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", tags=["partners"])

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]


@router.get("/partners/deliveries", response_model=list[DeliveryView])
async def list_deliveries(
    request: Request,
    _: Admin,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    partner: str | None = None,
    lead_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryView]:
    """Deliveries to partners, newest first; `status=failed` lists the parked ones."""
    async with runtime(request).engine.connect() as conn:
        rows = await repository.list_deliveries(
            conn, status=status_, partner_id=partner, lead_id=lead_id, limit=limit
        )
    return [DeliveryView.model_validate(r, from_attributes=True) for r in rows]


@router.get("/partners/deliveries/{delivery_id}", response_model=DeliveryView, responses={404: {}})
async def get_delivery(request: Request, delivery_id: str, _: Admin) -> DeliveryView:
    async with runtime(request).engine.connect() as conn:
        row = await repository.get_delivery(conn, delivery_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no delivery {delivery_id!r}")
    return DeliveryView.model_validate(row, from_attributes=True)


@router.post(
    "/partners/deliveries/{delivery_id}/retry",
    response_model=DeliveryView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {}, 409: {"description": "pending already, or the person was erased"}},
)
async def retry_delivery(delivery_id: str, _: Admin, conn: UnitOfWork) -> DeliveryView:
    """Send a parked (or delivered) delivery again, with a fresh count of attempts."""
    try:
        await deliveries.retry(conn, delivery_id, now=utcnow())
    except deliveries.DeliveryNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except deliveries.NotRetriable as exc:
        raise conflict(str(exc)) from exc
    row = await repository.get_delivery(conn, delivery_id)
    return DeliveryView.model_validate(row, from_attributes=True)
