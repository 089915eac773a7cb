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
# `rate_limit` on the connector).
DEFAULT_RATE_LIMIT = (100, 10.0)


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
