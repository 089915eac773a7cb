"""Deliveries as the API shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

_OUTCOMES = (
    "The last attempt's outcome: for webhooks http_2xx, http_3xx, http_4xx, http_5xx, "
    "timeout, refused_address, refused_scheme, tls_error, connect_error, protocol_error, "
    "no_secret, erased; for CRMs the connector's (crm_unavailable, crm_refused...). "
    "Nothing the receiver answered is kept."
)


class _Attempts(BaseModel):
    id: str
    lead_id: str
    event_id: str
    event_type: str = Field(
        default="lead.routed", description="The event delivered (lead.erased after an erasure)"
    )
    status: str = Field(description="pending, delivered, failed (parked) or cancelled")
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None = None
    last_outcome: str | None = Field(default=None, description=_OUTCOMES)
    last_error: str | None = Field(default=None, description="In Leadflow's words")
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None


class DeliveryView(_Attempts):
    kind: str = Field(description="partner, webhook (a subscription) or crm (a connector)")
    target_id: str = Field(description="The partner, the subscription or the connector")
    operation: str | None = Field(default=None, description="For crm: push or erase")
    url: str | None = Field(default=None, description="None for a CRM (its API is called)")


class PartnerDeliveryView(_Attempts):
    """`/v1/partners/deliveries` as it was (deprecated: `/v1/deliveries?kind=partner`)."""

    partner_id: str
    url: str


def partner_view(row: object) -> PartnerDeliveryView:
    view = DeliveryView.model_validate(row, from_attributes=True)
    return PartnerDeliveryView.model_validate(
        view.model_dump() | {"partner_id": view.target_id, "url": view.url or ""}
    )
