"""The wire: the CloudEvents 1.0 envelope and one pydantic model per event type.

This module is the single source of truth for what goes on Kafka. Producers build
these models; consumers decode with `decode_event`; the AsyncAPI document is
generated from them (`shared.asyncapi`). Schemas change only by adding optional
fields; data models ignore unknown fields so a consumer on an older schema keeps
working when producers move ahead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_serializer
from pydantic_core import TzInfo

from shared.ids import random_uuid

TOPIC_RECEIVED = "leads.received"
TOPIC_ROUTED = "leads.routed"
TOPIC_LIFECYCLE = "leads.lifecycle"
TOPIC_DEADLETTER = "leads.deadletter"
LEAD_TOPICS = (TOPIC_RECEIVED, TOPIC_ROUTED, TOPIC_LIFECYCLE)

# The CloudEvents Kafka binding (section 3) reads a record as structured mode only when its
# `content-type` header starts with `application/cloudevents`; without it, as binary mode.
CONTENT_TYPE = "application/cloudevents+json"


# What pydantic's parser makes of `Z`: a fixed zero offset, already UTC.
_PARSED_UTC = TzInfo(0)


def _in_utc(value: datetime) -> datetime:
    # The contract's times are UTC: a caller's offset (`+03:00`) is converted at the edge,
    # so no consumer ever sees a zone; a time without one (never RFC 3339) is read as UTC.
    zone = value.tzinfo
    if zone is UTC or zone == _PARSED_UTC:  # every decoded time: no copy
        return value
    if value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_in_utc)]


class LeadSource(StrEnum):
    web_form = "web_form"
    webinar_registration = "webinar_registration"
    webinar_attendance = "webinar_attendance"
    import_ = "import"
    api = "api"


class Route(StrEnum):
    sales = "sales"
    partner = "partner"
    nurture = "nurture"
    processing = "processing"
    rejected = "rejected"


class Stage(StrEnum):
    """Where a lead stands in the sales lifecycle."""

    routed = "routed"
    contacted = "contacted"
    accepted = "accepted"
    rejected = "rejected"
    sql = "sql"
    demo_held = "demo_held"
    proposal_sent = "proposal_sent"
    contract_sent = "contract_sent"
    won = "won"
    lost = "lost"


class _Data(BaseModel):
    # Unknown fields from a newer producer are ignored, never fatal.
    model_config = ConfigDict(extra="ignore")


class Utm(_Data):
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None


class Dimensions(_Data):
    """What every event of a lead carries so a read model can group it in any order."""

    source: str
    channel: str = "direct"
    campaign: str = "none"
    route: str | None = None
    definition_version: int | None = None


class LeadSnapshot(_Data):
    """A lead as intake stored it: normalized, de-duplicated, with consent recorded."""

    lead_id: str
    source: LeadSource
    form_id: str | None = None
    webinar_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    job_title: str | None = None
    industry: str | None = None
    company_size: str | None = None
    country: str | None = None
    region: str | None = None
    message: str | None = None
    services: list[str] = Field(default_factory=list)
    budget: Decimal | None = None
    timeframe: str | None = None
    role_in_purchase: str | None = None
    consent: bool = False
    consent_text_version: str | None = None
    utm: Utm = Field(default_factory=Utm)
    page_url: str | None = None
    referrer: str | None = None
    occurred_at: UtcTime
    received_at: UtcTime
    fields: dict[str, str] = Field(default_factory=dict)
    honeypot_filled: bool = False
    webinar_attended: bool = False
    # When the person gave consent (their submission) and, for webinars, when they joined.
    consent_at: UtcTime | None = None
    webinar_attended_at: UtcTime | None = None

    @field_serializer("budget")
    def _budget_as_string(self, v: Decimal | None) -> str | None:
        # Money travels as a string so no consumer rounds it through a float.
        return None if v is None else str(v)

    def dimensions(self) -> Dimensions:
        return Dimensions(
            source=self.source.value,
            channel=self.utm.source or "direct",
            campaign=self.utm.campaign or "none",
        )


class ScoreItem(_Data):
    points: int
    criterion: str


class Decision(_Data):
    route: Route
    score: int
    definition_version: int
    reasons: list[str]
    score_items: list[ScoreItem] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    team: str | None = None
    assignee: str | None = None
    partner: str | None = None
    sla_due_at: UtcTime | None = None
    decided_at: UtcTime


class LeadRoutedData(LeadSnapshot):
    """The lead snapshot plus the decision, so a sales tool needs nothing else."""

    decision: Decision


class LifecycleData(_Data):
    lead_id: str
    at: UtcTime
    by: str | None = None
    dimensions: Dimensions


class LeadContactedData(LifecycleData):
    first_contact: bool = True


class LeadBriefFilledData(LifecycleData):
    answers: dict[str, Any] = Field(default_factory=dict)


class LeadFeedbackData(LifecycleData):
    decision: Literal["accepted", "rejected"]
    reason: str | None = None


class LeadStageChangedData(LifecycleData):
    stage: Stage
    previous_stage: Stage | None = None
    reason: str | None = None


class LeadPaymentReceivedData(LifecycleData):
    payment_id: str
    amount: Decimal
    currency: str

    @field_serializer("amount")
    def _amount_as_string(self, v: Decimal) -> str:
        return str(v)


class LeadErasedData(_Data):
    lead_id: str
    at: UtcTime
    by: str | None = None


class LeadSlaBreachedData(LifecycleData):
    team: str | None = None
    assignee: str | None = None
    sla_due_at: UtcTime
    reassigned_to: str | None = None


class _Envelope(BaseModel):
    """CloudEvents 1.0 structured-mode attributes shared by every event."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    type: str
    id: str = Field(default_factory=random_uuid)
    source: str
    time: UtcTime
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"

    @property
    def topic(self) -> str:
        return TOPIC_OF_TYPE[self.type]

    @property
    def key(self) -> str:
        return self.subject


class LeadReceived(_Envelope):
    type: Literal["lead.received"] = "lead.received"
    data: LeadSnapshot


class LeadWebinarAttended(_Envelope):
    """A registered lead attended its webinar: the same lead, now with attendance recorded.

    `data` is the whole updated snapshot (`webinar_attended` true), so a consumer that keeps
    lead state replaces it; it is not a new lead and counts as none.
    """

    type: Literal["lead.webinar_attended"] = "lead.webinar_attended"
    data: LeadSnapshot


class LeadRouted(_Envelope):
    type: Literal["lead.routed"] = "lead.routed"
    data: LeadRoutedData


class LeadContacted(_Envelope):
    type: Literal["lead.contacted"] = "lead.contacted"
    data: LeadContactedData


class LeadBriefFilled(_Envelope):
    type: Literal["lead.brief_filled"] = "lead.brief_filled"
    data: LeadBriefFilledData


class LeadFeedback(_Envelope):
    type: Literal["lead.feedback"] = "lead.feedback"
    data: LeadFeedbackData


class LeadStageChanged(_Envelope):
    type: Literal["lead.stage_changed"] = "lead.stage_changed"
    data: LeadStageChangedData


class LeadPaymentReceived(_Envelope):
    type: Literal["lead.payment_received"] = "lead.payment_received"
    data: LeadPaymentReceivedData


class LeadErased(_Envelope):
    type: Literal["lead.erased"] = "lead.erased"
    data: LeadErasedData


class LeadSlaBreached(_Envelope):
    type: Literal["lead.sla_breached"] = "lead.sla_breached"
    data: LeadSlaBreachedData


Event = Annotated[
    LeadReceived
    | LeadWebinarAttended
    | LeadRouted
    | LeadContacted
    | LeadBriefFilled
    | LeadFeedback
    | LeadStageChanged
    | LeadPaymentReceived
    | LeadErased
    | LeadSlaBreached,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[_Envelope]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        LeadReceived,
        LeadWebinarAttended,
        LeadRouted,
        LeadContacted,
        LeadBriefFilled,
        LeadFeedback,
        LeadStageChanged,
        LeadPaymentReceived,
        LeadErased,
        LeadSlaBreached,
    )
}

TOPIC_OF_TYPE: dict[str, str] = {
    "lead.received": TOPIC_RECEIVED,
    "lead.webinar_attended": TOPIC_RECEIVED,
    "lead.routed": TOPIC_ROUTED,
    **{
        t: TOPIC_LIFECYCLE
        for t in EVENT_TYPES
        if t not in ("lead.received", "lead.webinar_attended", "lead.routed")
    },
}

SOURCE_INTAKE = "/intake"
SOURCE_QUALIFIER = "/qualifier"

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class UndecodableEvent(ValueError):
    """A message that is not a Leadflow event: parked on the dead-letter topic."""


def decode_event(raw: bytes | str) -> Event:
    try:
        return _EVENT_ADAPTER.validate_json(raw)
    except ValueError as exc:
        raise UndecodableEvent(str(exc)) from exc


def validate_event(doc: object) -> Event:
    """`decode_event` for JSON already parsed (an event whose sealed fields were opened)."""
    try:
        return _EVENT_ADAPTER.validate_python(doc)
    except ValueError as exc:
        raise UndecodableEvent(str(exc)) from exc


def encode_event(event: _Envelope, *, data_json: str | None = None) -> bytes:
    """The event as JSON. `data_json`: its `data` already serialized (`model_dump_json`), as
    a writer that stores the same snapshot has it; spliced in, the same bytes, made once."""
    if data_json is None:
        return event.model_dump_json().encode()
    # `data` is every envelope's last field: the attributes' object, then `"data":...}`.
    head = event.model_dump_json(exclude=_DATA)
    return f'{head[:-1]},"data":{data_json}}}'.encode()


_DATA: set[str] = {"data"}


_CONTENT_TYPE_HEADER = ("content-type", CONTENT_TYPE.encode())


def kafka_headers(event: _Envelope) -> list[tuple[str, bytes]]:
    return record_headers(event.type, event.id)


def record_headers(event_type: str, event_id: str) -> list[tuple[str, bytes]]:
    """The headers of an event's record: `content-type` says structured mode (the value is
    the whole event, as the CloudEvents Kafka binding reads it); `ce_type` and `ce_id` let
    consumers filter without parsing the value."""
    return [_CONTENT_TYPE_HEADER, ("ce_type", event_type.encode()), ("ce_id", event_id.encode())]


def utcnow() -> datetime:
    return datetime.now(UTC)
