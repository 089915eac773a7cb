"""Kommo (amoCRM): leads pushed through API v4, stage changes pulled from the account's
form-encoded webhooks (a secret in the URL, `account[id]` checked) and read back."""

from __future__ import annotations

from services.qualifier.crm.adapter import Vendor
from services.qualifier.crm.kommo.client import make_client
from services.qualifier.crm.kommo.notifications import parse_notification

# "Not more than 7 requests per second" per account (https://developers.kommo.com/docs/limitations).
# As an aiolimiter bucket (`requests` at once, refilled over `per_seconds`), (7, 1.0) would
# let 7 through at once and 7 more within the same second: one at a time every 0.15 s keeps
# any one-second window at 7 at most.
DEFAULT_RATE_LIMIT = (1, 0.15)

VENDOR = Vendor(
    kind="kommo",
    make_client=make_client,
    parse_notification=parse_notification,
    default_rate_limit=DEFAULT_RATE_LIMIT,
)

__all__ = ["DEFAULT_RATE_LIMIT", "VENDOR"]
