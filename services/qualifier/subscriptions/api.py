"""Webhook subscription endpoints (admin): made, listed, changed, deleted, secret rotated.
A secret is in the answer that makes it (create, rotate) and nowhere else."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from services.qualifier.deliveries import repository as deliveries_repository
from services.qualifier.deps import Admin, Settings, runtime
from services.qualifier.subscriptions import repository, service
from services.qualifier.subscriptions.schemas import (
    SecretRotated,
    SubscriptionCreated,
    SubscriptionIn,
    SubscriptionPatch,
    SubscriptionView,
)
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import unprocessable

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such subscription"}}
# An answer holding a secret is kept by no cache.
_NO_STORE = {"Cache-Control": "no-store"}


def _not_found(subscription_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no subscription {subscription_id!r}")


@router.post(
    "/subscriptions",
    response_model=SubscriptionCreated,
    status_code=status.HTTP_201_CREATED,
    responses={422: {"description": "a bad URL or event type, named"}},
)
async def create_subscription(
    body: SubscriptionIn, principal: Admin, settings: Settings, response: Response, conn: UnitOfWork
) -> SubscriptionCreated:
    """Subscribe a URL to event types; the answer shows the signing secret, this once."""
    now = utcnow()
    try:
        subscription_id, secret = await service.create(
            conn, body, by=principal.name, production=not settings.common.dev, now=now
        )
    except service.UnsafeUrl as exc:
        raise unprocessable(["body", "url"], str(exc)) from exc
    row = await repository.get(conn, subscription_id)
    response.headers.update(_NO_STORE)
    view = SubscriptionView.of(row, now=now)
    return SubscriptionCreated(**view.model_dump(), secret=secret)


@router.get("/subscriptions", response_model=list[SubscriptionView])
async def list_subscriptions(request: Request, _: Admin) -> list[SubscriptionView]:
    now = utcnow()
    async with runtime(request).engine.connect() as conn:
        rows = await repository.list_all(conn)
    return [SubscriptionView.of(r, now=now) for r in rows]


@router.get(
    "/subscriptions/{subscription_id}", response_model=SubscriptionView, responses=_NOT_FOUND
)
async def get_subscription(request: Request, subscription_id: str, _: Admin) -> SubscriptionView:
    """The subscription and its deliveries at a glance (`/v1/deliveries?kind=webhook&target=`
    lists them)."""
    async with runtime(request).engine.connect() as conn:
        row = await repository.get(conn, subscription_id)
        if row is None:
            raise _not_found(subscription_id)
        summary = await deliveries_repository.summary(conn, "webhook", subscription_id)
    return SubscriptionView.of(row, now=utcnow(), deliveries=summary)


@router.patch(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionView,
    responses={**_NOT_FOUND, 422: {"description": "a bad URL or event type, named"}},
)
async def change_subscription(
    subscription_id: str, patch: SubscriptionPatch, _: Admin, settings: Settings, conn: UnitOfWork
) -> SubscriptionView:
    """Change the URL (what is still owed goes there too), the event types (events
    published from now on), the description, or disable/enable it."""
    now = utcnow()
    try:
        await service.change(
            conn, subscription_id, patch, production=not settings.common.dev, now=now
        )
    except service.SubscriptionNotFound as exc:
        raise _not_found(subscription_id) from exc
    except service.UnsafeUrl as exc:
        raise unprocessable(["body", "url"], str(exc)) from exc
    return SubscriptionView.of(await repository.get(conn, subscription_id), now=now)


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_NOT_FOUND,
)
async def delete_subscription(subscription_id: str, _: Admin, conn: UnitOfWork) -> None:
    """Nothing more is sent; what was still owed is parked ("the subscription was deleted")
    and stays listed in `/v1/deliveries`."""
    if not await repository.delete(conn, subscription_id):
        raise _not_found(subscription_id)


@router.post(
    "/subscriptions/{subscription_id}/rotate-secret",
    response_model=SecretRotated,
    responses=_NOT_FOUND,
)
async def rotate_secret(
    subscription_id: str,
    _: Admin,
    response: Response,
    conn: UnitOfWork,
    overlap_hours: Annotated[float, Query(ge=0, le=service.MAX_OVERLAP_HOURS)] = 24,
) -> SecretRotated:
    """A new secret, shown this once; the old one signs too (a second signature in
    `webhook-signature`) for `overlap_hours`, so the receiver can switch without a gap."""
    try:
        secret, until = await service.rotate(
            conn, subscription_id, overlap=timedelta(hours=overlap_hours), now=utcnow()
        )
    except service.SubscriptionNotFound as exc:
        raise _not_found(subscription_id) from exc
    response.headers.update(_NO_STORE)
    return SecretRotated(id=subscription_id, secret=secret, previous_secret_valid_until=until)
