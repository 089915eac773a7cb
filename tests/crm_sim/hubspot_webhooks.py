"""The HubSpot simulator's outgoing webhooks: events, batching, v3 signatures, retries.

Format (developers.hubspot.com/docs/api-reference/webhooks, "Webhooks API"): a POST with
a JSON array of events `{"eventId", "subscriptionId", "portalId", "appId", "occurredAt",
"subscriptionType", "attemptNumber", "objectId", "propertyName", "propertyValue",
"changeSource", "sourceId"}`; several events per request (up to 100).

Signature v3 (developers.hubspot.com/docs/apps/legacy-apps/authentication/
validating-requests#validate-the-v3-request-signature, and the changelog entry
"introducing version 3 of webhook signatures"): `X-HubSpot-Signature-v3` =
base64(HMAC-SHA256(client secret, method + uri + body + timestamp)), timestamp in ms in
`X-HubSpot-Request-Timestamp`; reference implementation HubSpot/hubspot-api-python
`hubspot/utils/signature.py`. The page asks receivers to decode a few URL-encoded
characters of the URI before hashing; the simulator signs the decoded form too.

Retries: failed deliveries are retried with backoff (up to 10 attempts per older docs,
*unconfirmed* today; which statuses are retried is *unconfirmed* too): here on a
connection error, a timeout, 429 and 5xx, after `retry_delays` (short in tests).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

# The characters the v3 page lists as to be decoded in the URI before hashing.
_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def decoded_uri(uri: str) -> str:
    for code, char in _DECODE.items():
        uri = uri.replace(code, char).replace(code.lower(), char)
    return uri


def sign_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    source = method.encode() + decoded_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(client_secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# Subscriptions of the simulated app, as the app settings would list them.
SUBSCRIPTIONS = {
    ("deal.creation", None): 1001,
    ("deal.propertyChange", "dealstage"): 1002,
    ("deal.propertyChange", "amount"): 1003,
    ("deal.propertyChange", "closed_lost_reason"): 1004,
}


@dataclass
class Outbox:
    """Events waiting to go out, and what became of them (for the tests' assertions)."""

    portal_id: int
    app_id: int
    client_secret: str
    receiver: str | None = None
    drop_fraction: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    retry_delays: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    batch_size: int = 100
    timeout: float = 5.0
    pending: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "events": 0,
            "dropped": 0,
            "delivered": 0,
            "failed_attempts": 0,
            "given_up": 0,
        }
    )
    _ids: int = 900_000_000
    _wake: asyncio.Event | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def poke(self) -> None:
        if self._wake:
            self._wake.set()

    def event(
        self, kind: str, object_id: str, prop: str | None, value: str | None, source: str
    ) -> None:
        sub = SUBSCRIPTIONS.get((kind, prop))
        if sub is None:
            return
        self._ids += 1
        self.stats["events"] += 1
        if self.rng.random() < self.drop_fraction:
            self.stats["dropped"] += 1
            return
        event: dict[str, Any] = {
            "eventId": self._ids,
            "subscriptionId": sub,
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": int(object_id),
            "changeSource": source,
            "sourceId": "userId:7001" if source == "CRM_UI" else f"{self.app_id}",
        }
        if prop is None:
            event["changeFlag"] = "CREATED"
        else:
            event["propertyName"] = prop
            event["propertyValue"] = value or ""
        self.pending.append(event)
        self.poke()

    async def run(self) -> None:
        """Send what is pending in batches; each failed batch retries on its own."""
        self._wake = asyncio.Event()
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(0.05)  # let a burst of changes share a request
                while self.pending and self.receiver:
                    batch, self.pending = (
                        self.pending[: self.batch_size],
                        self.pending[self.batch_size :],
                    )
                    self._tasks.add(task := asyncio.create_task(self._deliver(http, batch)))
                    task.add_done_callback(self._tasks.discard)

    async def _deliver(self, http: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        for attempt, delay in enumerate((0.0, *self.retry_delays)):
            await asyncio.sleep(delay)
            url = self.receiver
            if url is None:
                return
            for event in batch:
                event["attemptNumber"] = attempt
            body = json.dumps(batch).encode()
            stamp = str(int(time.time() * 1000))
            headers = {
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": sign_v3(self.client_secret, "POST", url, body, stamp),
                "X-HubSpot-Request-Timestamp": stamp,
                "X-HubSpot-Signature-Version": "v3",
                "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)",
            }
            try:
                answer = await http.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                self.stats["failed_attempts"] += 1
                continue
            if answer.is_success:
                self.stats["delivered"] += len(batch)
                return
            self.stats["failed_attempts"] += 1
            if answer.status_code != 429 and answer.status_code < 500:
                break
        self.stats["given_up"] += len(batch)
