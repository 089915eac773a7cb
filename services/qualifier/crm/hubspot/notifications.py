"""HubSpot's webhook notifications: the v3 signature, the 5-minute rule, the events.

Facts (developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests,
"Validate the v3 request signature"; changelog "introducing version 3 of webhook
signatures"; reference implementation HubSpot/hubspot-api-python
`hubspot/utils/signature.py`): `X-HubSpot-Signature-v3` is
base64(HMAC-SHA256(client secret, method + URI + body + timestamp)), the timestamp (ms)
in `X-HubSpot-Request-Timestamp`; refuse one older than 5 minutes; compare in constant
time; the URI is hashed with a few URL-encoded characters decoded (`%3A` -> `:` ...).
A request holds a JSON array of events `{"eventId", "subscriptionId", "portalId",
"occurredAt", "subscriptionType", "attemptNumber", "objectId", "propertyName",
"propertyValue", "changeSource"}` (docs/api-reference/webhooks); HubSpot batches up to
100 events a request. Newer generic subscriptions send `object.propertyChange` with
`objectTypeId` "0-3" for deals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from services.qualifier.crm.adapter import IncomingRequest, Notice, NotificationRefused
from services.qualifier.crm.config import HubSpotConnector

MAX_BODY = 1_000_000
MAX_EVENTS = 1000
MAX_AGE = timedelta(minutes=5)
DEAL_TYPE_ID = "0-3"
_DECODE = (
    ("%3A", ":"),
    ("%2F", "/"),
    ("%3F", "?"),
    ("%40", "@"),
    ("%21", "!"),
    ("%24", "$"),
    ("%27", "'"),
    ("%28", "("),
    ("%29", ")"),
    ("%2A", "*"),
    ("%2C", ","),
    ("%3B", ";"),
)


def decoded_uri(uri: str) -> str:
    for code, char in _DECODE:
        uri = uri.replace(code, char).replace(code.lower(), char)
    return uri


def signature_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    source = method.upper().encode() + decoded_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(client_secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(client_secret: str, request: IncomingRequest) -> None:
    """Raise NotificationRefused(401) unless the request is signed and recent."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    given = headers.get("x-hubspot-signature-v3")
    stamp = headers.get("x-hubspot-request-timestamp", "")
    if not given:
        raise NotificationRefused(401, "X-HubSpot-Signature-v3 is missing")
    if not stamp.isdigit() or len(stamp) > 15:
        raise NotificationRefused(401, "X-HubSpot-Request-Timestamp is missing or not ms")
    sent_ms = int(stamp)
    now_ms = int(request.received_at.timestamp() * 1000)
    age = timedelta(milliseconds=now_ms - sent_ms)
    if age > MAX_AGE:
        raise NotificationRefused(401, "the timestamp is older than 5 minutes")
    if -age > MAX_AGE:
        raise NotificationRefused(401, "the timestamp is more than 5 minutes ahead")
    expected = signature_v3(client_secret, request.method, request.url, request.body, stamp)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise NotificationRefused(401, "X-HubSpot-Signature-v3 does not match")


def _notice(event: Mapping[str, Any], index: int, watched: frozenset[str]) -> Notice | None:
    kind = event.get("subscriptionType")
    if not isinstance(kind, str):
        raise NotificationRefused(400, f"event {index}: subscriptionType is missing")
    prop = event.get("propertyName")
    is_deal = kind.startswith("deal.") or (
        kind.startswith("object.") and str(event.get("objectTypeId")) == DEAL_TYPE_ID
    )
    creation = kind.endswith(".creation")
    if not is_deal or not (creation or (kind.endswith(".propertyChange") and prop in watched)):
        return None
    object_id, event_id = event.get("objectId"), event.get("eventId")
    if isinstance(object_id, bool) or not str(object_id).isdigit():
        raise NotificationRefused(400, f"event {index}: objectId is not a record id")
    if isinstance(event_id, bool) or not isinstance(event_id, int | str) or event_id == "":
        raise NotificationRefused(400, f"event {index}: eventId is missing")
    return Notice(crm_id=str(object_id), key=str(event_id))


def parse_notification(
    connector: HubSpotConnector, secrets: Mapping[str, str], request: IncomingRequest
) -> list[Notice]:
    if len(request.body) > MAX_BODY:
        raise NotificationRefused(413, "the body is over 1 MB")
    verify(secrets["client_secret"], request)
    try:
        events = json.loads(request.body)
    except ValueError:
        raise NotificationRefused(400, "the body is not JSON") from None
    if not isinstance(events, list):
        raise NotificationRefused(400, "the body is not a JSON array of events")
    if len(events) > MAX_EVENTS:
        raise NotificationRefused(413, f"more than {MAX_EVENTS} events")
    watched = frozenset({"dealstage", "amount", connector.lost_reason_property})
    notices: list[Notice] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise NotificationRefused(400, f"event {index} is not an object")
        portal = event.get("portalId")
        if isinstance(portal, bool) or str(portal) != str(connector.portal_id):
            raise NotificationRefused(403, f"event {index} is from another HubSpot account")
        notice = _notice(event, index, watched)
        if notice is not None:
            notices.append(notice)
    return notices
