"""Partner webhooks on the wire: the signature, the headers, the retry schedule, where a
webhook may go and what an attempt came to. Pure.

A delivery is `POST <webhook_url>` with the `lead.routed` CloudEvent (or, after an erasure,
`lead.erased`) as its JSON body, the Standard Webhooks headers (`standard`: `webhook-id`,
`webhook-timestamp`, `webhook-signature`) and, deprecated and kept for one release (until
Leadflow 2.0; docs/webhooks.md):

- `X-Leadflow-Delivery-Id`: the delivery's id, the same on every attempt (de-duplicate on it);
- `X-Leadflow-Event-Id`: the CloudEvent id;
- `X-Leadflow-Timestamp`: Unix seconds when this attempt was signed;
- `X-Leadflow-Signature`: `sha256=` + hex HMAC-SHA256 over `f"{timestamp}.{body}"` with the
  partner's secret. A receiver recomputes it over the raw body, compares in constant time,
  and refuses timestamps older than a few minutes (replays).

Where a webhook may go (the deliverer checks it at connect time, the API at publish time):
a partner URL is set by an admin, and the deliverer runs inside our network, so a URL
naming a loopback, private or link-local address (169.254.169.254: the cloud's metadata
service) would let it reach what the internet cannot. Only public addresses are allowed;
dev mode also allows loopback (local test receivers). Production also requires https.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

from services.qualifier.partners.standard import signing_key, standard_headers

HEADER_DELIVERY = "X-Leadflow-Delivery-Id"
HEADER_EVENT = "X-Leadflow-Event-Id"
HEADER_TIMESTAMP = "X-Leadflow-Timestamp"
HEADER_SIGNATURE = "X-Leadflow-Signature"
USER_AGENT = "Leadflow-Webhooks/1.0"
# What an attempt reads of an answer at most: the status is all it keeps, and a receiver
# must not be able to make the deliverer read (or hold) a large body.
ANSWER_READ_LIMIT = 4096

# What one attempt came to: stored with the delivery instead of anything the remote said.
Outcome = Literal[
    "http_2xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "timeout",
    "refused_address",
    "refused_scheme",
    "tls_error",
    "connect_error",
    "protocol_error",
    "no_secret",
    "erased",
]

# What `last_error` says of an attempt that got no HTTP answer: our words, never the remote's.
OUTCOME_MESSAGES: dict[Outcome, str] = {
    "timeout": "no answer within the attempt's time limit",
    "refused_address": "refused: webhooks go to public addresses only (the host is or "
    "resolves to a loopback, private, link-local or reserved address)",
    "refused_scheme": "refused: production sends webhooks over https only",
    "tls_error": "the TLS handshake failed (certificate or protocol)",
    "connect_error": "could not connect",
    "protocol_error": "the answer was not valid HTTP",
    "no_secret": "no webhook secret configured for the partner",
    "erased": "the person was erased; there is nothing to send",
}
PERMANENT_OUTCOMES: frozenset[Outcome] = frozenset(
    ("no_secret", "erased", "refused_address", "refused_scheme")
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


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
    } | standard_headers(
        msg_id=delivery_id, timestamp=timestamp, body=body, keys=[signing_key(secret)]
    )


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


def http_outcome(status_code: int) -> Outcome:
    if status_code < 300:
        return "http_2xx"
    if status_code < 400:
        return "http_3xx"
    return "http_4xx" if status_code < 500 else "http_5xx"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_allowed(address: IpAddress, *, allow_loopback: bool) -> bool:
    """A public unicast address (or, when allowed, a loopback one)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return address_allowed(inner, allow_loopback=allow_loopback)
    if address.is_loopback:
        return allow_loopback
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
    )


def url_problem(url: str, *, production: bool) -> str | None:
    """What is wrong with a webhook URL before any lookup, or None: the scheme (https in
    production) and a host that is a non-public address literal or a name of this machine."""
    parts = urlsplit(url)
    if production and parts.scheme != "https":
        return "production sends webhooks over https only"
    host = (parts.hostname or "").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if production and (host == "localhost" or host.endswith(".localhost")):
            return "webhooks go to public addresses only, not to this machine"
        return None
    if not address_allowed(address, allow_loopback=not production):
        return "webhooks go to public addresses only, not loopback, private or link-local ones"
    return None
