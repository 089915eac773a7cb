"""Partner delivery endpoints, as they were: deprecated for `/v1/deliveries?kind=partner`
(same rows, `target_id` for `partner_id`), kept for one release."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from services.qualifier.deliveries import repository
from services.qualifier.deliveries.api import requeue
from services.qualifier.deliveries.repository import Status
from services.qualifier.deliveries.schemas import PartnerDeliveryView, partner_view
from services.qualifier.deps import Admin, runtime
from shared.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", tags=["partners"])


@router.get("/partners/deliveries", response_model=list[PartnerDeliveryView], deprecated=True)
async def list_deliveries(
    request: Request,
    _: Admin,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    partner: str | None = None,
    lead_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PartnerDeliveryView]:
    """Deliveries to partners, newest first; `status=failed` lists the parked ones."""
    async with runtime(request).engine.connect() as conn:
        rows = await repository.list_deliveries(
            conn, kind="partner", status=status_, target_id=partner, lead_id=lead_id, limit=limit
        )
    return [partner_view(r) for r in rows]


async def _partner_delivery(request: Request, delivery_id: str) -> PartnerDeliveryView:
    async with runtime(request).engine.connect() as conn:
        row = await repository.get_delivery(conn, delivery_id)
    if row is None or row.kind != "partner":
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no delivery {delivery_id!r}")
    return partner_view(row)


@router.get(
    "/partners/deliveries/{delivery_id}",
    response_model=PartnerDeliveryView,
    responses={404: {}},
    deprecated=True,
)
async def get_delivery(request: Request, delivery_id: str, _: Admin) -> PartnerDeliveryView:
    return await _partner_delivery(request, delivery_id)


@router.post(
    "/partners/deliveries/{delivery_id}/retry",
    response_model=PartnerDeliveryView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {}, 409: {"description": "pending already, or the person was erased"}},
    deprecated=True,
)
async def retry_delivery(delivery_id: str, _: Admin, conn: UnitOfWork) -> PartnerDeliveryView:
    """Send a parked (or delivered) delivery again, with a fresh count of attempts."""
    row = await repository.get_delivery(conn, delivery_id)
    if row is None or row.kind != "partner":
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no delivery {delivery_id!r}")
    return partner_view(await requeue(conn, delivery_id))
