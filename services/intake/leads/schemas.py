"""A lead as sources submit it and as intake answers for it, and the text types they share."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

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
