"""The subscription sender: a delivery of kind `webhook` is POSTed to its URL, signed the
Standard Webhooks way with the subscription's secret (and, during a rotation's overlap,
the previous one too), both read at the attempt: a rotation applies to retries as well."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.qualifier.config import QualifierSettings
from services.qualifier.deliveries.deliverer import AttemptResult
from services.qualifier.partners.sender import WebhookSender, refused
from services.qualifier.partners.standard import signing_key, standard_headers
from services.qualifier.partners.webhooks import USER_AGENT
from services.qualifier.subscriptions import repository
from shared.db import AnyRow, utcnow

log = logging.getLogger(__name__)

DELETED = AttemptResult("no_subscription", None, "the subscription was deleted", permanent=True)
DISABLED = AttemptResult("subscription_disabled", None, "the subscription is disabled", True)


class SubscriptionSender(WebhookSender):
    """`engine`: the database's, as the runtime has it when the deliverer runs."""

    def __init__(
        self,
        settings: QualifierSettings,
        engine: Callable[[], AsyncEngine],
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(settings, client)
        self._engine = engine

    async def __call__(self, row: AnyRow) -> AttemptResult:
        async with self._engine().connect() as conn:
            subscription = await repository.signing(conn, row.target_id)
        if subscription is None:
            return DELETED
        if subscription.disabled_at is not None:
            return DISABLED
        if row.payload is None:
            return refused("erased")
        keys = [signing_key(subscription.secret)]
        until = subscription.previous_valid_until
        if subscription.previous_secret is not None and until is not None and until > utcnow():
            keys.append(signing_key(subscription.previous_secret))
        body: bytes = row.payload
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        headers |= standard_headers(msg_id=row.id, timestamp=int(time.time()), body=body, keys=keys)
        result = await self.post(row.url, body, headers)
        if result.status_code == 410:
            # Gone: the receiver wants no more (the spec: disable the endpoint). An operator
            # enables it again with PATCH {"disabled": false}.
            async with self._engine().begin() as conn:
                await repository.update(conn, row.target_id, disabled_at=utcnow())
            log.warning("webhook subscription %s answered 410 Gone: disabled", row.target_id)
        return result
