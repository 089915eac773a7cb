"""Kommo's failure answers as the core's two exceptions, with messages of our own.

- 429 over the account's 7 requests a second (https://developers.kommo.com/docs/limitations);
  the page documents no `Retry-After`, so without one the wait is that one-second window.
- 401 a bad or expired token, 403 no rights or an IP block, 402 an unpaid account
  (https://www.amocrm.com/developers/content/api/errors/).
- 400 `validation-errors: [{request_id, errors: [{code, path, detail}]}]`: only `code` and
  `path` are kept; `detail` may echo what was written, personal data included.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from services.qualifier.crm.adapter import CrmRefused, CrmUnavailable

RATE_WINDOW = 1.0
_SAFE = re.compile(r"[^A-Za-z0-9_.\[\]-]")


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (a number or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _safe(text: object, limit: int = 80) -> str:
    return _SAFE.sub("", str(text))[:limit]


def validation_summary(body: bytes) -> str:
    """`code at path` for each validation error (at most five), or '' when none."""
    try:
        found = json.loads(body).get("validation-errors") or []
        errors = [e for group in found for e in group.get("errors") or []]
        parts = [f"{_safe(e.get('code'))} at {_safe(e.get('path')) or '(body)'}" for e in errors]
    except (ValueError, AttributeError, TypeError):
        return ""
    return "; ".join(parts[:5])


def failure(status: int, headers: dict[str, str], body: bytes, call: str) -> Exception:
    """The exception for a non-2xx answer to `call` (e.g. "leads/complex")."""
    wait = retry_after(headers.get("retry-after"))
    if status == 429:
        return CrmUnavailable(
            f"Kommo rate limit on {call} (429)",
            retry_after=RATE_WINDOW if wait is None else wait,
        )
    if status >= 500:
        return CrmUnavailable(f"Kommo answered {status} on {call}", retry_after=wait)
    if status == 401:
        return CrmRefused(f"Kommo refused the token on {call} (401)")
    if status == 402:
        return CrmRefused(f"Kommo account is not paid for the API (402) on {call}")
    if status == 403:
        return CrmRefused(f"Kommo forbids {call} (403: no rights, or the IP is blocked)")
    if status == 400:
        summary = validation_summary(body)
        return CrmRefused(f"Kommo refused {call} (400)" + (f": {summary}" if summary else ""))
    return CrmRefused(f"Kommo refused {call} ({status})")
