"""Bitrix24's outbound webhook: which deals a notification names, once it is authentic.

Facts (github.com/bitrix24/b24restdocs):
- The body is `application/x-www-form-urlencoded`: `event`, `data[FIELDS][ID]`, `ts`,
  `auth[domain]`, `auth[member_id]`, `auth[application_token]`... (local-integrations/
  local-webhooks.md "What the Handler Receives"; api-reference/crm/deals/events/
  on-crm-deal-update.md). Only the id arrives: the core reads the deal back.
- Authenticity: "Compare the `auth[application_token]` value in the request with the token
  value shown in the outgoing webhook settings" (local-webhooks.md "How to Verify Request
  Authenticity"; api-reference/events/safe-event-handlers.md): compared in constant time,
  403 otherwise. There is no signature, so `ts` proves nothing; a maximum age is optional.
- `auth[member_id]` is the portal's identifier (_includes/auth-params-in-events.md): a
  connector that names one refuses notifications of another portal (403).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl

from services.qualifier.crm.adapter import IncomingRequest, Notice, NotificationRefused
from services.qualifier.crm.config import Bitrix24Connector

MAX_BODY = 1024 * 1024
MAX_FIELDS = 1000
DEAL_EVENTS = frozenset({"ONCRMDEALADD", "ONCRMDEALUPDATE"})


def read_form(body: bytes) -> dict[str, str]:
    """The form's fields (the last of a repeated key wins, as in PHP); bounded work."""
    if len(body) > MAX_BODY:
        raise NotificationRefused(413, f"the body is over {MAX_BODY} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotificationRefused(400, "the body is not UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise NotificationRefused(400, f"the form has more than {MAX_FIELDS} fields") from None
    return dict(pairs)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def parse_notification(
    connector: Bitrix24Connector, secrets: Mapping[str, str], request: IncomingRequest
) -> list[Notice]:
    found = [v for k, v in request.headers.items() if k.lower() == "content-type"]
    kind = (found[0] if found else "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise NotificationRefused(400, "expected an application/x-www-form-urlencoded body")
    form = read_form(request.body)
    expected = secrets.get("application_token") or ""
    if not expected or not _same(form.get("auth[application_token]", ""), expected):
        raise NotificationRefused(403, "auth[application_token] does not match the connector's")
    if connector.member_id is not None and not _same(
        form.get("auth[member_id]", ""), connector.member_id
    ):
        raise NotificationRefused(403, "auth[member_id] names another Bitrix24 account")
    if connector.max_event_age_seconds is not None:
        ts = form.get("ts", "")
        if not ts.isdigit():
            raise NotificationRefused(400, "ts is missing or not a number")
        age = request.received_at.timestamp() - int(ts)
        if abs(age) > connector.max_event_age_seconds:
            raise NotificationRefused(401, "ts is outside the accepted age")
    event = form.get("event", "").upper()
    if not event:
        raise NotificationRefused(400, "the form has no event")
    if event not in DEAL_EVENTS:
        return []  # accepted and ignored: only deals are pushed
    deal_id = form.get("data[FIELDS][ID]", "")
    if not deal_id.isdigit() or len(deal_id) > 18 or int(deal_id) <= 0:
        raise NotificationRefused(400, "data[FIELDS][ID] is missing or not a deal id")
    return [Notice(crm_id=str(int(deal_id)))]
