"""The delivery list's endpoints: every outgoing call (partner webhooks, webhook
subscriptions, CRM pushes), what became of it, and sending a parked one again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from services.qualifier.deliveries import deliverer, repository
from services.qualifier.deliveries.repository import Kind, Status
from services.qualifier.deliveries.schemas import DeliveryView
from services.qualifier.deps import Admin, conflict, runtime
from shared.db import AnyRow, utcnow
from shared.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", tags=["deliveries"])


@router.get("/deliveries", response_model=list[DeliveryView])
async def list_deliveries(
    request: Request,
    _: Admin,
    kind: Kind | None = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    lead_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryView]:
    """Deliveries newest first; `status=failed` lists the parked ones."""
    async with runtime(request).engine.connect() as conn:
        rows = await repository.list_deliveries(
            conn, kind=kind, target_id=target, status=status_, lead_id=lead_id, limit=limit
        )
    return [DeliveryView.model_validate(r, from_attributes=True) for r in rows]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryView, responses={404: {}})
async def get_delivery(request: Request, delivery_id: str, _: Admin) -> DeliveryView:
    async with runtime(request).engine.connect() as conn:
        row = await repository.get_delivery(conn, delivery_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no delivery {delivery_id!r}")
    return DeliveryView.model_validate(row, from_attributes=True)


async def requeue(conn: UnitOfWork, delivery_id: str) -> AnyRow:
    """Send a delivery again (the retry endpoints of both lists); the row as it is now."""
    try:
        await deliverer.retry(conn, delivery_id, now=utcnow())
    except deliverer.DeliveryNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except deliverer.NotRetriable as exc:
        raise conflict(str(exc)) from exc
    row = await repository.get_delivery(conn, delivery_id)
    assert row is not None
    return row


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {}, 409: {"description": "pending already, or the person was erased"}},
)
async def retry_delivery(delivery_id: str, _: Admin, conn: UnitOfWork) -> DeliveryView:
    """Send a parked (or delivered) delivery again, with a fresh count of attempts."""
    return DeliveryView.model_validate(await requeue(conn, delivery_id), from_attributes=True)
