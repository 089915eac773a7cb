"""Partner webhooks on the wire: the signature, the headers, and the retry schedule. Pure.

A delivery is `POST <webhook_url>` with the `lead.routed` CloudEvent as its JSON body and:

- `X-Leadflow-Delivery-Id`: the delivery's id, the same on every attempt (de-duplicate on it);
- `X-Leadflow-Event-Id`: the CloudEvent id;
- `X-Leadflow-Timestamp`: Unix seconds when this attempt was signed;
- `X-Leadflow-Signature`: `sha256=` + hex HMAC-SHA256 over `f"{timestamp}.{body}"` with the
  partner's secret. A receiver recomputes it over the raw body, compares in constant time,
  and refuses timestamps older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable

HEADER_DELIVERY = "X-Leadflow-Delivery-Id"
HEADER_EVENT = "X-Leadflow-Event-Id"
HEADER_TIMESTAMP = "X-Leadflow-Timestamp"
HEADER_SIGNATURE = "X-Leadflow-Signature"
USER_AGENT = "Leadflow-Webhooks/1.0"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def signed_headers(
    *, secret: str, timestamp: int, body: bytes, delivery_id: str, event_id: str
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        HEADER_DELIVERY: delivery_id,
        HEADER_EVENT: event_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature(secret, timestamp, body),
    }


def verify(
    secret: str, timestamp: str, body: bytes, presented: str, *, now: int, tolerance: int = 300
) -> bool:
    """What a receiver does (and what the tests' receivers do)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, sent, body), presented)


def retriable(status_code: int) -> bool:
    """Worth trying again: the receiver is down, overloaded, or asks us to wait.

    Any other 4xx says the request itself is refused (a wrong secret, a gone URL):
    the delivery is parked at once for an operator to fix and retry.
    """
    return status_code >= 500 or status_code in (408, 425, 429)


def retry_delay(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential, capped, with "equal jitter": at least half the step, so retries never
    bunch up at zero, and at most the step, so replicas retrying at once spread out.
    """
    step = min(cap, base * 2 ** (attempt - 1))
    return step / 2 + rand() * step / 2
