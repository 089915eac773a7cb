"""Calling a Bitrix24 portal through its incoming webhook, and its answers as the core's
two exceptions, with messages of our own.

Facts (github.com/bitrix24/b24restdocs):
- `https://{portal}/rest/{user_id}/{code}/{method}.json`, POST, JSON body; the code is a
  secret, so the URL is never logged or put in a message, and transport errors (whose
  text holds the URL) are raised `from None` (local-integrations/local-webhooks.md).
- Errors are `{"error": CODE, "error_description": text}`; the text "is not intended to be
  shown to the end user in its raw form" and may echo what was written, so only the
  code is kept (_includes/error-info.md). Statuses (_includes/system-errors.md): 503
  `QUERY_LIMIT_EXCEEDED` and `OVERLOAD_LIMIT`, 500 `INTERNAL_SERVER_ERROR`, 401
  `NO_AUTH_FOUND`/`expired_token`, 403 `insufficient_scope`/`INVALID_CREDENTIALS`/
  `ACCESS_DENIED`; 429 `OPERATION_TIME_LIMIT` when a method's run time over the last 10
  minutes passes its limit (limits.md).
- The counter of the leaky bucket "decreases by Y once per second" (limits.md) and no
  `Retry-After` is documented: without one, QUERY_LIMIT_EXCEEDED waits one second,
  OPERATION_TIME_LIMIT one minute (its baskets are minutes).
- `batch`: `{"halt", "cmd": {key: "method?query"}}`, the query in PHP's http_build_query
  form, at most 50 commands; `$result[key]` names an earlier command's result
  (settings/how-to-call-rest-api/batch.md, data-encoding.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

import httpx
from aiolimiter import AsyncLimiter

from services.qualifier.crm.adapter import CrmRefused, CrmUnavailable

_CODE = re.compile(r"[^A-Za-z0-9_]")
_BUSY = {"QUERY_LIMIT_EXCEEDED": 1.0, "OVERLOAD_LIMIT": None, "OPERATION_TIME_LIMIT": 60.0}
MAX_BATCH = 50
# A deal missing is HTTP 400 with an empty code and this text (crm-deal-get.md).
NOT_FOUND = "Not found"


def safe_code(value: object) -> str:
    return _CODE.sub("", str(value))[:60]


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (HTTP dates are not sent by Bitrix24), None if absent."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def failure(status: int, headers: Mapping[str, str], body: Any, method: str) -> Exception:
    """The exception for an answer that is not a success."""
    code = safe_code(body.get("error", "")) if isinstance(body, dict) else ""
    wait = retry_after(headers.get("retry-after"))
    what = f"bitrix24 {method}"
    if code in _BUSY or status == 429 or status >= 500:
        default = _BUSY.get(code)
        return CrmUnavailable(
            f"{what}: unavailable, {code or 'no error code'} (HTTP {status})",
            retry_after=wait if wait is not None else default,
        )
    return CrmRefused(f"{what}: refused, {code or 'no error code'} (HTTP {status})")


def is_not_found(status: int, body: Any) -> bool:
    return (
        status == 400
        and isinstance(body, dict)
        and not body.get("error")
        and body.get("error_description") == NOT_FOUND
    )


class NotFound(Exception):
    """The record the call names does not exist (any more)."""


class Portal:
    """One connector's incoming webhook: every call waits for the account's budget."""

    def __init__(
        self, base_url: str, user_id: int, code: str, http: httpx.AsyncClient, budget: AsyncLimiter
    ) -> None:
        self._root = f"{base_url.rstrip('/')}/rest/{user_id}/{code}"
        self._http = http
        self._budget = budget

    async def call(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The whole success answer (`result`, and `total`/`next` for lists)."""
        async with self._budget:
            try:
                answer = await self._http.post(f"{self._root}/{method}.json", json=params)
            except httpx.TimeoutException:
                raise CrmUnavailable(f"bitrix24 {method}: no answer in time") from None
            except httpx.HTTPError:
                raise CrmUnavailable(f"bitrix24 {method}: connection failed") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code == 200 and isinstance(body, dict) and "result" in body:
            return body
        if is_not_found(answer.status_code, body):
            raise NotFound(method)
        if answer.status_code == 200:
            raise CrmUnavailable(f"bitrix24 {method}: an answer without a result (HTTP 200)")
        raise failure(answer.status_code, answer.headers, body, method)

    async def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
        """Run `commands` (key -> method, params) in order, stopping at the first error;
        the results by key. A command that failed raises as its own call would have,
        naming the method (`NotFound` for a missing record)."""
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands")
        cmd = {key: f"{method}?{php_query(params)}" for key, (method, params) in commands.items()}
        body = (await self.call("batch", {"halt": 1, "cmd": cmd}))["result"]
        if not isinstance(body, dict):
            raise CrmUnavailable("bitrix24 batch: an answer without results")
        results = body.get("result") or {}
        errors = body.get("result_error") or {}
        for key, (method, _) in commands.items():
            error = errors.get(key) if isinstance(errors, dict) else None
            if error is not None:
                if is_not_found(400, error):
                    raise NotFound(method)
                raise failure(400, {}, error, method)
            if not isinstance(results, dict) or key not in results:
                raise CrmUnavailable(f"bitrix24 batch: no result for {method}")
        return dict(results)


def php_query(params: Mapping[str, Any]) -> str:
    """PHP's http_build_query: nested maps and lists as `a[b][0]=v`, None left out."""
    pairs: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        else:
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            pairs.append(f"{quote_plus(prefix)}={quote_plus(text)}")

    walk("", params)
    return "&".join(pairs)


def result_ref(key: str) -> str:
    """A batch reference to an earlier command's result (an id, for an add)."""
    return f"$result[{key}]"
