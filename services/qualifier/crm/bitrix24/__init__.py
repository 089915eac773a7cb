"""Bitrix24: leads pushed as deals through the portal's incoming webhook (REST), stage
changes pulled from its outbound webhook (form-encoded, id only, `application_token`
checked) and read back; reconciliation lists the deals modified since the last sync."""

from __future__ import annotations

from services.qualifier.crm.adapter import Vendor
from services.qualifier.crm.bitrix24.client import make_client
from services.qualifier.crm.bitrix24.notifications import parse_notification

# A leaky bucket per portal: 50 requests, the counter dropping by 2 each second
# (limits.md, "Others"; Enterprise 250 and 5: set the connector's `rate_limit`). As an
# aiolimiter budget: 50 at once, refilled over 25 s, i.e. 2 a second.
DEFAULT_RATE_LIMIT = (50, 25.0)

VENDOR = Vendor(
    kind="bitrix24",
    make_client=make_client,
    parse_notification=parse_notification,
    default_rate_limit=DEFAULT_RATE_LIMIT,
)

__all__ = ["DEFAULT_RATE_LIMIT", "VENDOR"]
