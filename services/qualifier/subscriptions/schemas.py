"""Webhook subscriptions as the API takes and shows them; the secret only once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.events import EVENT_TYPES

# What a subscription may ask for: what the qualifier publishes, and the erasure notice.
# Intake's own events (a raw lead, a webinar attendance) are not sent anywhere.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = tuple(
    t for t in EVENT_TYPES if t not in ("lead.received", "lead.webinar_attended")
)


def _event_type(value: str) -> str:
    if value not in WEBHOOK_EVENT_TYPES:
        raise ValueError(
            f"unknown event type {value!r}: expected one of {', '.join(WEBHOOK_EVENT_TYPES)}"
        )
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return value


EventType = Annotated[str, AfterValidator(_event_type)]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]
Url = Annotated[str, Field(max_length=2000), AfterValidator(_http_url)]
Description = Annotated[str, Field(max_length=500)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubscriptionIn(_Strict):
    url: Url
    event_types: EventTypes = Field(description="The event types sent, e.g. lead.routed")
    description: Description | None = None


class SubscriptionPatch(_Strict):
    """Only the fields given change."""

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    disabled: bool | None = Field(default=None, description="true stops sending; false resumes")


class SubscriptionView(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None = None
    created_at: datetime
    created_by: str | None = None
    updated_at: datetime
    disabled_at: datetime | None = None
    previous_secret_valid_until: datetime | None = Field(
        default=None, description="After a rotation: the old secret signs too until then"
    )
    deliveries: dict[str, Any] | None = Field(
        default=None,
        description="On GET of one: pending, delivered, failed, cancelled, last_error, "
        "last_delivered_at",
    )

    @classmethod
    def of(cls, row: Any, *, now: datetime, **extra: Any) -> SubscriptionView:
        until = row.previous_valid_until
        return cls(
            id=row.id,
            url=row.url,
            event_types=row.event_types,
            description=row.description,
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
            disabled_at=row.disabled_at,
            previous_secret_valid_until=until if until is not None and until > now else None,
            **extra,
        )


class SubscriptionCreated(SubscriptionView):
    secret: str = Field(description="whsec_…: shown this once; keep it where secrets go")


class SecretRotated(BaseModel):
    id: str
    secret: str = Field(description="The new whsec_… secret: shown this once")
    previous_secret_valid_until: datetime = Field(
        description="Until then every delivery carries a second signature, the old secret's"
    )
