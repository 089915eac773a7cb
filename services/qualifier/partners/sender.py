"""Webhook senders: an HTTP POST through the pinned transport, as the deliverer takes it.
`PartnerSender` sends a delivery of kind `partner`: its webhook, signed with the partner's
secret (Standard Webhooks headers, and the legacy `X-Leadflow-*` ones for one release)."""

from __future__ import annotations

import time
from types import TracebackType

import httpx

from services.qualifier.config import QualifierSettings
from services.qualifier.deliveries.deliverer import AttemptResult
from services.qualifier.partners.transport import Sent, send, webhook_client
from services.qualifier.partners.webhooks import (
    OUTCOME_MESSAGES,
    PERMANENT_OUTCOMES,
    Outcome,
    retriable,
    signed_headers,
)
from shared.db import AnyRow


def attempt_result(sent: Sent) -> AttemptResult:
    """An HTTP attempt's outcome as the deliverer takes it: a 2xx delivers; a status says
    whether to retry; without one, the outcome does (in our words)."""
    code = sent.status_code
    if code is not None:
        if sent.outcome == "http_2xx":
            return AttemptResult(sent.outcome, code, None, permanent=False)
        return AttemptResult(
            sent.outcome, code, f"HTTP {code}", not retriable(code), sent.retry_after
        )
    return AttemptResult(
        sent.outcome, None, OUTCOME_MESSAGES[sent.outcome], sent.outcome in PERMANENT_OUTCOMES
    )


def refused(outcome: Outcome) -> AttemptResult:
    return attempt_result(Sent(outcome))


class WebhookSender:
    """What every webhook sender shares: the HTTP client, held for as long as the deliverer
    runs (it enters its senders), unless given one (tests: one trusting their certificates)."""

    def __init__(self, settings: QualifierSettings, client: httpx.AsyncClient | None = None):
        self._settings = settings
        self._client = client
        self._owned: httpx.AsyncClient | None = None

    async def __aenter__(self) -> WebhookSender:
        if self._client is None:
            self._owned = self._client = webhook_client(self._settings)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned is not None:
            await self._owned.aclose()
            self._owned = self._client = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        if self._client is None:
            raise RuntimeError("a webhook sender is used outside its context")
        s = self._settings
        sent = await send(
            self._client,
            url,
            body,
            headers,
            production=not s.common.dev,
            total_seconds=s.partner_timeout_seconds,
        )
        return attempt_result(sent)


class PartnerSender(WebhookSender):
    async def __call__(self, row: AnyRow) -> AttemptResult:
        secret = self._settings.partner_secret(row.target_id)
        if secret is None:
            # Never send a lead unsigned: the partner could not tell it from a forgery.
            return refused("no_secret")
        if row.payload is None:
            return refused("erased")
        body: bytes = row.payload
        headers = signed_headers(
            secret=secret,
            timestamp=int(time.time()),
            body=body,
            delivery_id=row.id,
            event_id=row.event_id,
        )
        return await self.post(row.url, body, headers)
