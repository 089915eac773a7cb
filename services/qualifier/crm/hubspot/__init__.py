"""HubSpot: deals (and their contacts) in a portal, over a private app's token; stage
changes back through the app's signed v3 webhooks (notifications.py) and search."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from aiolimiter import AsyncLimiter

from services.qualifier.crm.adapter import CrmClient, Vendor
from services.qualifier.crm.config import HubSpotConnector
from services.qualifier.crm.hubspot.client import HubSpotClient
from services.qualifier.crm.hubspot.notifications import parse_notification

# Private apps, Free/Starter: 100 requests per 10 s (developers.hubspot.com/docs/
# developer-tooling/platform/usage-guidelines; Professional/Enterprise 190: set
# `rate_limit` on the connector). The budget is a leaky bucket (aiolimiter): a bucket of 100
# refilled over 10 s would let 100 through at once and 100 more within the same 10 s, so
# calls are spaced instead: one every 0.105 s, at most 96 in any 10 s.
DEFAULT_RATE_LIMIT = (1, 0.105)


def make_client(
    connector: HubSpotConnector,
    secrets: Mapping[str, str],
    http: httpx.AsyncClient,
    budget: AsyncLimiter,
) -> CrmClient:
    return HubSpotClient(connector, secrets, http, budget)


VENDOR = Vendor(
    kind="hubspot",
    make_client=make_client,
    parse_notification=parse_notification,
    default_rate_limit=DEFAULT_RATE_LIMIT,
)
