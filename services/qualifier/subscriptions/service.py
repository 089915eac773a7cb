"""Webhook subscriptions: made, changed, rotated; and what each published event owes them.

`owe` is called by `outbound.publish`, in the transaction that publishes the events: a
`webhook` delivery per (event, enabled subscription wanting its type), its body the
structured CloudEvent (the bytes partners get), so an event commits with every delivery it
owes. Subscriptions are read afresh each time: nothing is cached across transactions,
since another replica may have changed them a moment ago.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.deliveries import repository as deliveries_repository
from services.qualifier.event_ids import derived_event_id
from services.qualifier.partners.standard import new_secret
from services.qualifier.partners.webhooks import url_problem
from services.qualifier.subscriptions import repository
from services.qualifier.subscriptions.schemas import (
    WEBHOOK_EVENT_TYPES,
    SubscriptionIn,
    SubscriptionPatch,
)
from shared.db import AnyRow
from shared.events import Event, encode_event

MAX_OVERLAP_HOURS = 168


class SubscriptionNotFound(LookupError):
    pass


class UnsafeUrl(ValueError):
    """A URL the deliverer would refuse whatever DNS says (`webhooks.url_problem`)."""


def check_url(url: str, *, production: bool) -> None:
    problem = url_problem(url, production=production)
    if problem is not None:
        raise UnsafeUrl(problem)


async def create(
    conn: AsyncConnection, body: SubscriptionIn, *, by: str, production: bool, now: datetime
) -> tuple[str, str]:
    """A new subscription: its id and its secret (which is shown once)."""
    check_url(body.url, production=production)
    subscription_id, secret = str(uuid.uuid4()), new_secret()
    await repository.insert(
        conn,
        {
            "id": subscription_id,
            "url": body.url,
            "event_types": list(dict.fromkeys(body.event_types)),
            "secret": secret,
            "description": body.description,
            "created_at": now,
            "created_by": by,
            "updated_at": now,
        },
    )
    return subscription_id, secret


async def change(
    conn: AsyncConnection,
    subscription_id: str,
    patch: SubscriptionPatch,
    *,
    production: bool,
    now: datetime,
) -> None:
    row = await _locked(conn, subscription_id)
    values: dict[str, Any] = {"updated_at": now}
    if patch.url is not None and patch.url != row.url:
        check_url(patch.url, production=production)
        values["url"] = patch.url
        await repository.redirect_unsent(conn, subscription_id, patch.url, now)
    if patch.event_types is not None:
        values["event_types"] = list(dict.fromkeys(patch.event_types))
    if patch.description is not None:
        values["description"] = patch.description
    if patch.disabled is not None:
        values["disabled_at"] = (row.disabled_at or now) if patch.disabled else None
    await repository.update(conn, subscription_id, **values)


async def rotate(
    conn: AsyncConnection, subscription_id: str, *, overlap: timedelta, now: datetime
) -> tuple[str, datetime]:
    """A new secret; the current one keeps signing (a second signature) until the overlap
    ends. Of an earlier rotation still overlapping, the oldest secret goes now: two sign
    at most."""
    row = await _locked(conn, subscription_id)
    secret, until = new_secret(), now + overlap
    await repository.update(
        conn,
        subscription_id,
        secret=secret,
        previous_secret=row.secret,
        previous_valid_until=until,
        updated_at=now,
    )
    return secret, until


async def _locked(conn: AsyncConnection, subscription_id: str) -> AnyRow:
    row = await repository.lock(conn, subscription_id)
    if row is None:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return row


async def owe(conn: AsyncConnection, events: Sequence[Event], *, now: datetime) -> int:
    """The webhook deliveries `events` owe the subscriptions wanting them; how many."""
    wanted = [e for e in events if e.type in WEBHOOK_EVENT_TYPES]
    if not wanted:
        return 0
    subscriptions = await repository.enabled(conn)
    if not subscriptions:
        return 0
    rows: list[dict[str, Any]] = []
    for event in wanted:
        body: bytes | None = None
        for subscription in subscriptions:
            if event.type not in subscription.event_types:
                continue
            body = body or encode_event(event)
            rows.append(
                deliveries_repository.delivery_row(
                    delivery_id=derived_event_id(event.id, f"webhook/{subscription.id}"),
                    lead_id=event.subject,
                    kind="webhook",
                    target_id=subscription.id,
                    event_id=event.id,
                    event_type=event.type,
                    url=subscription.url,
                    payload=body,
                    now=now,
                )
            )
    await deliveries_repository.insert_deliveries(conn, rows)
    return len(rows)
