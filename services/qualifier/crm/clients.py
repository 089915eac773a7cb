"""One process's CRM clients: a shared HTTP client, and one budget per CRM account.

The budget is each vendor's documented rate (Bitrix24 a leaky bucket of 50 draining 2 a
second, Kommo 7 a second, HubSpot 100 per 10 s), or the connector's own `rate_limit`;
every call of the account in this process waits for it, so the CRM's limit is met
before it answers 429. Replicas each keep their own budget: run N replicas with
`rate_limit` at 1/N of the account's (docs/crm.md).
"""

from __future__ import annotations

import httpx
from aiolimiter import AsyncLimiter

from services.qualifier.crm import secrets
from services.qualifier.crm.adapter import CrmClient
from services.qualifier.crm.secrets import AnyConnector
from services.qualifier.crm.vendors import vendor

# Each call's own limits: a CRM that does not answer within them is unavailable now.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class CrmClients:
    """Made before the event loop runs; the HTTP client is opened on first use and closed
    by `aclose` (the CRM sync job's exit)."""

    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None
        self._budgets: dict[tuple[str, int, float], AsyncLimiter] = {}

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def budget(self, connector: AnyConnector) -> AsyncLimiter:
        v = vendor(connector.kind)
        limit = connector.rate_limit
        requests, per = (limit.requests, limit.per_seconds) if limit else v.default_rate_limit
        key = (connector.id, requests, per)
        if key not in self._budgets:
            self._budgets[key] = AsyncLimiter(requests, per)
        return self._budgets[key]

    def client(self, connector: AnyConnector) -> CrmClient:
        """Raises MissingSecret when the connector's variables are not set."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        return vendor(connector.kind).make_client(
            connector, secrets.resolve(connector), self._http, self.budget(connector)
        )
