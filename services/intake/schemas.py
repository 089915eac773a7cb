"""Intake's request and response models."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.intake.forms import FORM_TARGETS
from shared.events import LeadSnapshot, LeadSource

# Tab, CR and LF are text; every other control character, and a lone surrogate (which
# no database can store), is refused so nothing half-valid reaches a table.
_CONTROL = {*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F}
# The same characters, and the surrogates, found by one scan in C (every text field of
# every lead goes through this).
_REFUSED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _printable(value: str) -> str:
    refused = _REFUSED.search(value)
    if refused is None:
        return value
    code = ord(refused.group())
    if code in _CONTROL:
        raise ValueError(f"contains the control character U+{code:04X}")
    raise ValueError("contains an unpaired UTF-16 surrogate; send valid Unicode")


_Printable = AfterValidator(_printable)
Tiny = Annotated[str, StringConstraints(max_length=50), _Printable]
Short = Annotated[str, StringConstraints(max_length=200), _Printable]
Title = Annotated[str, StringConstraints(max_length=300), _Printable]
Medium = Annotated[str, StringConstraints(max_length=2000), _Printable]
Long = Annotated[str, StringConstraints(max_length=10000), _Printable]
EmailText = Annotated[str, StringConstraints(max_length=320), _Printable]
PhoneText = Annotated[str, StringConstraints(max_length=40), _Printable]
CountryText = Annotated[str, StringConstraints(max_length=60), _Printable]
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]


class UtmIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: Short | None = None
    medium: Short | None = None
    campaign: Short | None = None
    term: Short | None = None
    content: Short | None = None


class PersonIn(BaseModel):
    """Who a lead is and what they said: what every source has in common."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Short | None = None
    email: EmailText | None = None
    phone: PhoneText | None = None
    company: Short | None = None
    job_title: Short | None = None
    industry: Short | None = None
    company_size: Tiny | None = None
    country: CountryText | None = None
    region: Short | None = None
    message: Long | None = None
    services: Annotated[list[Short], Field(max_length=50)] = Field(default_factory=list)
    budget: Annotated[Decimal, Field(ge=0, le=Decimal("1e15"), decimal_places=2)] | None = None
    timeframe: Tiny | None = None
    role_in_purchase: Tiny | None = None
    consent_text_version: Tiny | None = None
    utm: UtmIn = Field(default_factory=UtmIn)
    page_url: Medium | None = None
    referrer: Medium | None = None
    occurred_at: datetime | None = None
    fields: Annotated[dict[Short, Medium], Field(max_length=100)] = Field(default_factory=dict)


class LeadIn(PersonIn):
    """One lead as a server posts it. Unknown fields are refused; free answers go in `fields`."""

    source: LeadSource = LeadSource.api
    form_id: Short | None = None
    webinar_id: Short | None = None
    consent: bool = False


class WebinarPersonIn(PersonIn):
    """A webinar registrant or attendee. `occurred_at`: when they registered, or joined.

    `consent` defaults to the webinar's: registering is consent under its text version.
    """

    first_name: Short | None = None
    last_name: Short | None = None
    consent: bool | None = None


class LeadAccepted(BaseModel):
    """`accepted`: a new lead. `updated`: attendance recorded on the registrant's lead.
    `duplicate`: nothing stored; `duplicate_of` is the lead it repeats."""

    lead_id: str
    status: Literal["accepted", "updated", "duplicate"]
    duplicate_of: str | None = None


class StoredLead(BaseModel):
    """What intake holds for one lead."""

    lead: LeadSnapshot
    erased: bool = False


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class LeadBatchIn(BaseModel):
    """Up to 500 leads; each is checked on its own, so one bad item rejects only itself."""

    model_config = ConfigDict(extra="forbid")

    leads: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=500,
            json_schema_extra={"items": {"$ref": "#/components/schemas/LeadIn"}},
        ),
    ]


class ItemResult(BaseModel):
    index: int
    status: Literal["accepted", "updated", "duplicate", "rejected"]
    lead_id: str | None = None
    duplicate_of: str | None = None
    errors: list[ErrorItem] = Field(default_factory=list)


class BatchResult(BaseModel):
    accepted: int
    updated: int = 0
    duplicates: int
    rejected: int
    results: list[ItemResult]


class RowError(BaseModel):
    row: int = Field(description="line of the file where the record starts (1 = first line)")
    error: str


class ImportSummary(BaseModel):
    """`accepted`: new leads plus attendance recorded on registrants (`attendance_recorded`)."""

    accepted: int
    attendance_recorded: int
    duplicates: int
    rejected: list[RowError]
    rejected_count: int = Field(description="all rejected rows; `rejected` lists the first 1000")


class ErasureResult(BaseModel):
    lead_id: str
    status: Literal["erased", "already_erased"]
    erased_at: datetime


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
