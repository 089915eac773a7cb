"""Standard Webhooks (standardwebhooks.com) on the wire: secrets, keys, signatures, headers.

Every webhook (a partner's, a subscription's) carries:

- `webhook-id`: the delivery's id, the same on every attempt (the receiver's idempotency
  key; a UUID, so never a `.`);
- `webhook-timestamp`: Unix seconds when this attempt was signed;
- `webhook-signature`: `v1,` + base64 HMAC-SHA256 over `{id}.{timestamp}.{body}`, one per
  signing key, space-separated (during a rotation the previous secret signs as well).

A secret is `whsec_` + base64 of random bytes, and its key is those bytes, as the spec
serializes it and its libraries read it. A partner secret configured before (any text,
not `whsec_`) keeps working: its key is its UTF-8 bytes, the same key as the legacy
`X-Leadflow-Signature`, so a receiver verifies with `Webhook(secret.encode())`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"
# The spec asks for at least 24 random bytes; 32 is HMAC-SHA256's block-sized sweet spot.
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: a `whsec_` one's base64-decoded bytes, else its UTF-8."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret is base64 after its prefix") from exc
    return secret.encode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(
    *, msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]
) -> dict[str, str]:
    """The three headers; one signature per key (the current one first)."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }
