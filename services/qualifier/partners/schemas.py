"""Partner deliveries as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class DeliveryView(BaseModel):
    id: str
    lead_id: str
    partner_id: str
    event_id: str
    event_type: str = Field(
        default="lead.routed", description="lead.routed, or lead.erased after an erasure"
    )
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None = None
    last_outcome: str | None = Field(
        default=None,
        description="The last attempt's outcome: http_2xx, http_3xx, http_4xx, http_5xx, "
        "timeout, refused_address, refused_scheme, tls_error, connect_error, protocol_error, "
        "no_secret, erased. Nothing the receiver answered is kept.",
    )
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None
