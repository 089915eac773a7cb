"""What every CRM connector implements, and what the core gives it and gets back.

The core (`crm.pushes`, `crm.pull`, `crm.reconcile`) knows no vendor: it owes pushes in
the transaction that routes a lead, leases them, and turns CRM records into lifecycle
calls. A vendor package (`crm.bitrix24`, `crm.kommo`, `crm.hubspot`) knows only its
CRM's wire: it builds requests, reads answers and checks notifications. Errors come back
as the two exceptions below, so the core can retry or park without knowing the vendor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

# Where a CRM stage sits: still open, closed as won, closed as lost. Every vendor has it:
# Bitrix24 STAGE_SEMANTIC_ID P/S/F, Kommo statuses 142/143, HubSpot a stage's
# `isClosed` and `probability` metadata.
Semantic = Literal["open", "won", "lost"]


@dataclass(frozen=True)
class PushLead:
    """A routed lead as a CRM record needs it. Personal fields are None once erased."""

    lead_id: str
    title: str
    name: str | None
    email: str | None
    phone: str | None
    company: str | None
    # Leadflow's source (web_form, tilda, zoom, webinar_csv, api) and channel.
    source: str
    channel: str | None
    # UTM tags keyed as the lead's snapshot has them: source, medium, campaign, term, content.
    utm: Mapping[str, str]
    # The CRM user id of the salesperson the qualifier picked (mapped), or the default.
    owner: str | None
    # The decision's reasons, plain text, one per line: why the lead is theirs.
    note: str
    route: str
    team: str | None
    received_at: datetime
    # Any further fields the definition asked for (services, budget...), for custom fields.
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CrmRecord:
    """A record read back from the CRM: its stage, and what a lifecycle event needs."""

    crm_id: str
    # The CRM's own stage id (Bitrix24 STAGE_ID; Kommo `status_id`; HubSpot `dealstage`),
    # matched against the connector's stage mapping (with `pipeline` where a rule has one).
    stage: str
    semantic: Semantic
    modified_at: datetime
    # The pipeline (funnel) the record is in, where stage ids repeat across pipelines.
    pipeline: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    loss_reason: str | None = None
    owner: str | None = None
    # The Leadflow lead id the record carries (ORIGIN_ID, a custom field, `leadflow_id`),
    # when the CRM kept it: how a record found by reconciliation is matched to its lead.
    lead_id: str | None = None


@dataclass(frozen=True)
class Notice:
    """One change a notification announces. The core reads the record back before it
    believes anything (only Bitrix24's id is certain to be there)."""

    crm_id: str
    # A vendor event id to de-duplicate on (HubSpot `eventId`), None when there is none.
    key: str | None = None


class CrmUnavailable(Exception):
    """Retry later: HTTP 429, Bitrix24 `QUERY_LIMIT_EXCEEDED`/`OVERLOAD_LIMIT`, 5xx, a
    timeout or a dropped connection. `retry_after` is the CRM's `Retry-After`, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CrmRefused(Exception):
    """Retrying cannot help: bad credentials, no rights, a validation error. The message
    is ours (the error code and field path at most), never a CRM answer's free text,
    which may echo personal data."""


class NotificationRefused(Exception):
    """An incoming notification that must not be applied: answered with `status_code`
    (400 malformed, 401 bad signature or stale timestamp, 403 wrong token or account).
    The message names the problem and holds no personal data."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class CrmClient(Protocol):
    """One connector's calls to its CRM. Every method may raise CrmUnavailable or
    CrmRefused; none logs personal data."""

    async def upsert(self, lead: PushLead, crm_id: str | None) -> str:
        """Create the record (or, given `crm_id`, update it) and add the note; return the
        CRM id. Idempotent: when a create's answer was lost, the next call finds the record
        by the lead id it carries instead of creating a second one."""
        ...

    async def erase(self, crm_id: str) -> None:
        """Remove the person's data from the record (and its contact)."""
        ...

    async def fetch(self, crm_id: str) -> CrmRecord | None:
        """The record as it is now; None when the CRM no longer has it."""
        ...

    async def modified_since(self, since: datetime) -> Sequence[CrmRecord]:
        """Records modified at or after `since` (the reconciliation poll), all pages."""
        ...


@dataclass(frozen=True)
class IncomingRequest:
    """A notification as it arrived, for the vendor's checks."""

    method: str
    # The full URL the CRM called, as HubSpot signs it.
    url: str
    headers: Mapping[str, str]
    body: bytes
    # The secret path segment of the receiving URL (Kommo), if any.
    path_secret: str | None
    received_at: datetime


@dataclass(frozen=True)
class Vendor:
    """A vendor package's entry points (`VENDOR` in each of crm.bitrix24, crm.kommo,
    crm.hubspot), registered in `crm.vendors`.

    - `make_client(connector, secrets, http, budget)`: the connector's CrmClient. `secrets`
      maps `connector.secret_names()` keys (e.g. "token") to their values; `http` is a
      shared httpx.AsyncClient (no base URL: build absolute URLs from `connector.base_url`);
      every request first waits for `budget` (`async with budget:`, an aiolimiter
      AsyncLimiter shared by all of the account's calls in this process).
    - `parse_notification(connector, secrets, request)`: checks the notification's
      authenticity (token, URL secret, signature and its age) and reads which records it
      names; raises NotificationRefused.
    - `default_rate_limit`: the vendor's documented budget as (requests, per_seconds).
    """

    kind: str
    make_client: Callable[..., CrmClient]
    parse_notification: Callable[..., list[Notice]]
    default_rate_limit: tuple[int, float]
