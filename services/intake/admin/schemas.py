"""Form and webinar configuration as admins send and read it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from services.intake.leads.schemas import Short, Tiny, Title
from services.intake.sources.forms import FORM_TARGETS


def _origin(value: str) -> str:
    """`https://Example.com:443/` -> `https://example.com`: what a browser sends as Origin."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an origin is scheme://host[:port], e.g. https://www.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError("an origin has no path, query, fragment or user info")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _region(value: str) -> str:
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("not an ISO 3166 alpha-2 region phonenumbers knows, e.g. RU or KZ")
    return value.upper()


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an absolute http(s) URL")
    return value


Region = Annotated[str, AfterValidator(_region)]


class FormConfigIn(BaseModel):
    """How a website form posts: who may post it, what its fields mean, where it thanks people."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Short | None = None
    allowed_origins: Annotated[
        list[Annotated[str, AfterValidator(_origin)]], Field(max_length=50)
    ] = Field(default_factory=list, description="browser origins allowed to post the form")
    field_map: Annotated[dict[Short, str], Field(max_length=100)] = Field(
        default_factory=dict,
        description="the form's own field names -> lead fields (`Email` -> `email`); "
        "fields neither mapped nor named like a lead field are kept in `fields`",
    )
    honeypot_field: Short | None = Field(
        default=None, description="a field hidden from people; a bot that fills it is flagged"
    )
    thank_you_url: Annotated[str, AfterValidator(_http_url)] | None = Field(
        default=None, max_length=2000, description="browsers are redirected here (303)"
    )
    consent_field: Short | None = Field(
        default="consent",
        description="the consent checkbox; null when submitting the form is the consent",
    )
    consent_text_version: Tiny | None = None
    default_phone_region: Region | None = None
    min_fill_seconds: float = Field(default=3.0, ge=0, le=3600)
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=100_000)
    server_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="lets servers (Tilda) post without an Origin: `?key=` or `X-Leadflow-Form-Key`."
        " Omitted on PUT: the stored key is kept; null: removed. Never shown again.",
    )

    @field_validator("field_map")
    @classmethod
    def _known_targets(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted({t for t in v.values() if t not in FORM_TARGETS})
        if unknown:
            raise ValueError(f"unknown lead fields {unknown}; known: {', '.join(FORM_TARGETS)}")
        return v

    @model_validator(mode="after")
    def _consent_is_recorded(self) -> FormConfigIn:
        if self.consent_field is None and not self.consent_text_version:
            raise ValueError(
                "a form without a consent field must name the consent text version its page shows"
            )
        return self


class FormConfig(BaseModel):
    form_id: str
    name: str | None
    allowed_origins: list[str]
    field_map: dict[str, str]
    honeypot_field: str | None
    thank_you_url: str | None
    consent_field: str | None
    consent_text_version: str | None
    default_phone_region: str | None
    min_fill_seconds: float
    rate_limit_per_minute: int | None
    server_key_set: bool
    created_at: datetime
    updated_at: datetime


def _zoom_id(value: str) -> str:
    digits = value.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 9 <= len(digits) <= 15:
        raise ValueError("Zoom's webinar id: 9 to 15 digits, e.g. 812 3456 7890")
    return digits


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"not an IANA time zone: {value!r}") from exc
    return value


class WebinarConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: Title | None = None
    zoom_webinar_id: Annotated[str, AfterValidator(_zoom_id)] | None = None
    timezone: Annotated[str, AfterValidator(_timezone)] = Field(
        default="UTC", description="the zone of the times in a Zoom attendee report"
    )
    consent_text_version: Tiny = Field(
        description="registering is consent under this text; recorded on every lead"
    )
    default_phone_region: Region | None = None
    starts_at: datetime | None = None


class WebinarConfig(BaseModel):
    webinar_id: str
    title: str | None
    zoom_webinar_id: str | None
    timezone: str
    consent_text_version: str
    default_phone_region: str | None
    starts_at: datetime | None
    created_at: datetime
    updated_at: datetime
