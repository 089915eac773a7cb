"""Kommo (amoCRM): leads pushed through API v4, stage changes pulled from the account's
form-encoded webhooks (a secret in the URL, `account[id]` checked) and read back."""

from __future__ import annotations

from services.qualifier.crm.adapter import Vendor
from services.qualifier.crm.kommo.client import make_client
from services.qualifier.crm.kommo.notifications import parse_notification

# "Not more than 7 requests per second" per account (https://developers.kommo.com/docs/limitations).
DEFAULT_RATE_LIMIT = (7, 1.0)

VENDOR = Vendor(
    kind="kommo",
    make_client=make_client,
    parse_notification=parse_notification,
    default_rate_limit=DEFAULT_RATE_LIMIT,
)

__all__ = ["DEFAULT_RATE_LIMIT", "VENDOR"]
