"""HubSpot's answers turned into the core's two errors, with messages of our own.

Facts (developers.hubspot.com/docs/api-reference/latest/error-handling and
docs/developer-tooling/platform/usage-guidelines): errors are JSON `{"status": "error",
"message", "correlationId", "category"}`, CRM object validation errors add `errors:
[{"code", "context": {"propertyName": [...]}}]`; the message may echo submitted values
(an e-mail), so only the category, codes and property names are kept. Over the limit:
429 with `policyName` (`TEN_SECONDLY_ROLLING`, `DAILY`, `SECONDLY` for search) and
`X-HubSpot-RateLimit-Interval-Milliseconds`; no `Retry-After` is documented, so a
rolling-window 429 waits one window unless the answer names a `Retry-After`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from services.qualifier.crm.adapter import CrmRefused, CrmUnavailable

_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
# Rate-limit policies and how long to wait when the answer gives no Retry-After.
_WAIT = {"SECONDLY": 1.0}


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def describe(response: httpx.Response) -> str:
    """`HubSpot <status> <category> <codes> <property names>`, nothing from free text."""
    body = _body(response)
    parts = [f"HubSpot {response.status_code}"]
    for token in (body.get("category"), body.get("errorType"), body.get("policyName")):
        if isinstance(token, str) and _CODE.match(token):
            parts.append(token)
    for item in body.get("errors") or []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("code"), str) and _CODE.match(item["code"]):
            parts.append(item["code"])
        names = (item.get("context") or {}).get("propertyName") or []
        parts += [f"property {n}" for n in names if isinstance(n, str) and _PROPERTY.match(n)]
    return " ".join(dict.fromkeys(parts))


def check(response: httpx.Response) -> None:
    """Return on 2xx; raise CrmUnavailable (429, 5xx) or CrmRefused (other 4xx)."""
    status = response.status_code
    if status < 300:
        return
    message = describe(response)
    if status == 429:
        wait = _retry_after(response)
        if wait is None:
            policy = _body(response).get("policyName")
            window = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
            if window.isdigit():
                wait = int(window) / 1000
            elif isinstance(policy, str):
                wait = _WAIT.get(policy)
        raise CrmUnavailable(message, retry_after=wait)
    if status >= 500 or status == 408:
        raise CrmUnavailable(message, retry_after=_retry_after(response))
    raise CrmRefused(message)
