"""What the CRM endpoints answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ConnectorView(BaseModel):
    id: str
    kind: str
    # The configuration as validated, defaults filled in; secrets appear only as the
    # names of their environment variables.
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    updated_by: str | None
    warnings: list[str] = Field(default_factory=list)


class ConnectorStatus(BaseModel):
    id: str
    kind: str
    enabled: bool
    # Leads with a record in the CRM (pushed at least once), and of them erased there.
    pushed: int
    # The delivery list's rows of this connector (GET /v1/deliveries?kind=crm&target=ID).
    pending: int
    delivered: int
    parked: int
    cancelled: int
    last_delivered_at: datetime | None
    # Records notifications named that are still to be read back.
    pulls_owed: int
    # Records whose last CRM change could not be applied (skipped, with why, per record).
    skipped: int
    synced_until: datetime | None
    last_sync_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    # Environment variables the configuration names that are not set here.
    missing_secrets: list[str]


class NotificationAccepted(BaseModel):
    # Records named (each to be read back), and vendor event ids seen before (ignored).
    records: int
    duplicates: int


class SyncStarted(BaseModel):
    records: int
