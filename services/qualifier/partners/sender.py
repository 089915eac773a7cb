"""The partner sender: a delivery of kind `partner` is its webhook, signed with the
partner's secret and POSTed through the pinned transport."""

from __future__ import annotations

import time
from types import TracebackType

import httpx

from services.qualifier.config import QualifierSettings
from services.qualifier.deliveries.deliverer import AttemptResult
from services.qualifier.partners.transport import send, webhook_client
from services.qualifier.partners.webhooks import (
    OUTCOME_MESSAGES,
    PERMANENT_OUTCOMES,
    Outcome,
    retriable,
    signed_headers,
)
from shared.db import AnyRow


def attempt_result(outcome: Outcome, status_code: int | None) -> AttemptResult:
    """An HTTP attempt's outcome as the deliverer takes it: a 2xx delivers; a status says
    whether to retry; without one, the outcome does (in our words)."""
    if status_code is not None:
        if outcome == "http_2xx":
            return AttemptResult(outcome, status_code, None, permanent=False)
        return AttemptResult(
            outcome, status_code, f"HTTP {status_code}", permanent=not retriable(status_code)
        )
    return AttemptResult(
        outcome, None, OUTCOME_MESSAGES[outcome], permanent=outcome in PERMANENT_OUTCOMES
    )


class PartnerSender:
    """Entered for as long as the deliverer runs (it holds the HTTP client), unless given a
    client (tests: one trusting their own certificates)."""

    def __init__(self, settings: QualifierSettings, client: httpx.AsyncClient | None = None):
        self._settings = settings
        self._client = client
        self._owned: httpx.AsyncClient | None = None

    async def __aenter__(self) -> PartnerSender:
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

    async def __call__(self, row: AnyRow) -> AttemptResult:
        s = self._settings
        secret = s.partner_secret(row.target_id)
        if secret is None:
            # Never send a lead unsigned: the partner could not tell it from a forgery.
            return attempt_result("no_secret", None)
        if row.payload is None:
            return attempt_result("erased", None)
        if self._client is None:
            raise RuntimeError("the partner sender is used outside its context")
        body: bytes = row.payload
        headers = signed_headers(
            secret=secret,
            timestamp=int(time.time()),
            body=body,
            delivery_id=row.id,
            event_id=row.event_id,
        )
        outcome, status_code = await send(
            self._client,
            row.url,
            body,
            headers,
            production=not s.common.dev,
            total_seconds=s.partner_timeout_seconds,
        )
        return attempt_result(outcome, status_code)
