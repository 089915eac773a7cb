"""Kommo's account webhooks: which leads a notification names, once it is shown to come
from the configured account.

Kommo POSTs `application/x-www-form-urlencoded` with the entity, the action and an index
in each key (`leads[status][0][id]`, `leads[add][0][...]`, `leads[update][0][...]`) and
the account as `account[id]`, `account[subdomain]`
(https://www.amocrm.ru/developers/content/crm_platform/webhooks-format; the field names
inside an entry come from receivers' code, no vendor page lists them: only `id` and
`pipeline_id` are relied on). Kommo signs nothing and sends no timestamp
(https://developers.kommo.com/docs/webhooks-general), so authenticity is the secret in
the receiving URL, compared in constant time, plus `account[id]`; freshness is not
checkable, which is why the core reads each lead back before it believes anything.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from services.qualifier.crm.adapter import IncomingRequest, Notice, NotificationRefused
from services.qualifier.crm.config import KommoConnector

MAX_BODY = 1_000_000
MAX_ENTRIES = 1000
# Kommo's entries carry about fifteen fields each, more with custom fields.
MAX_FIELDS = 100_000
ACTIONS = ("status", "add", "update")
_KEY = re.compile(r"^leads\[([a-z_]{1,20})\]\[(\d{1,6})\]\[([a-z_]{1,40})\]")


def _secret_ok(given: str | None, expected: str) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _form(request: IncomingRequest) -> list[tuple[str, str]]:
    kind = request.headers.get("content-type", request.headers.get("Content-Type", ""))
    if kind and not kind.lower().startswith("application/x-www-form-urlencoded"):
        raise NotificationRefused(400, "a Kommo webhook is application/x-www-form-urlencoded")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotificationRefused(400, "the body is not UTF-8") from None
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise NotificationRefused(400, f"more than {MAX_FIELDS} form fields") from None


def _entries(form: list[tuple[str, str]]) -> dict[tuple[str, int], dict[str, str]]:
    entries: dict[tuple[str, int], dict[str, str]] = {}
    for key, value in form:
        match = _KEY.match(key)
        if match is None or match.group(1) not in ACTIONS:
            continue
        action, index, name = match.group(1), int(match.group(2)), match.group(3)
        entry = entries.setdefault((action, index), {})
        if len(entries) > MAX_ENTRIES:
            raise NotificationRefused(400, f"more than {MAX_ENTRIES} lead entries")
        entry.setdefault(name, value)
    return entries


def _account(form: list[tuple[str, str]]) -> int:
    values = [v for k, v in form if k == "account[id]"]
    if not values:
        raise NotificationRefused(400, "account[id] is missing")
    if len(values) > 1 or not values[0].isdigit():
        raise NotificationRefused(400, "account[id] is not one account id")
    return int(values[0])


def parse_notification(
    connector: KommoConnector, secrets: Mapping[str, str], request: IncomingRequest
) -> list[Notice]:
    """The leads of `connector.pipeline_id` the webhook names, each once, in order."""
    if len(request.body) > MAX_BODY:
        raise NotificationRefused(413, f"the body is over {MAX_BODY} bytes")
    if not _secret_ok(request.path_secret, secrets.get("webhook_secret", "")):
        raise NotificationRefused(403, "the webhook URL's secret does not match")
    form = _form(request)
    if _account(form) != connector.account_id:
        raise NotificationRefused(403, "the webhook comes from another Kommo account")
    notices: dict[str, Notice] = {}
    for (action, index), entry in sorted(_entries(form).items(), key=lambda kv: kv[0][1]):
        lead_id = entry.get("id", "")
        if not lead_id.isdigit() or int(lead_id) < 1:
            raise NotificationRefused(400, f"leads[{action}][{index}][id] is not a lead id")
        pipeline = entry.get("pipeline_id")
        if pipeline is not None and pipeline != str(connector.pipeline_id):
            continue  # another pipeline's lead: not this connector's
        notices.setdefault(str(int(lead_id)), Notice(crm_id=str(int(lead_id))))
    return list(notices.values())
