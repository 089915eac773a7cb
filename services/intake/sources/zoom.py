"""Zoom webhooks: the signature check, the URL-validation answer, and events as leads. Pure."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

REGISTRATION_CREATED = "webinar.registration_created"
PARTICIPANT_JOINED = "webinar.participant_joined"
URL_VALIDATION = "endpoint.url_validation"


class ZoomAuthError(Exception):
    """The request is not provably from Zoom: answered 401, naming the header at fault."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header
        self.message = message


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}`, as Zoom signs."""
    return "v0=" + _hmac_hex(secret, b"v0:" + timestamp.encode() + b":" + body)


def verify(
    *,
    secret: str,
    timestamp: str | None,
    signed: str | None,
    body: bytes,
    now: float,
    max_age_seconds: int,
) -> None:
    """Raise ZoomAuthError unless the body is signed with our secret within the time window.

    Every request is checked, the URL-validation challenge too: answering an unsigned
    challenge would hand anyone an HMAC of a text of their choosing under our secret.
    """
    if not timestamp:
        raise ZoomAuthError("x-zm-request-timestamp", "missing Zoom request timestamp")
    if not signed:
        raise ZoomAuthError("x-zm-signature", "missing Zoom signature")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise ZoomAuthError("x-zm-request-timestamp", "not a Unix time in seconds") from exc
    if abs(now - sent_at) > max_age_seconds:
        raise ZoomAuthError(
            "x-zm-request-timestamp",
            f"the request is more than {max_age_seconds} s old (or ahead); refused as a replay",
        )
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), signed.encode()):
        raise ZoomAuthError("x-zm-signature", "the signature does not match the body")


def url_validation_answer(secret: str, plain_token: str) -> dict[str, str]:
    return {"plainToken": plain_token, "encryptedToken": _hmac_hex(secret, plain_token.encode())}


class _Zoom(BaseModel):
    # Zoom adds fields over time; what we do not read is ignored, never fatal.
    model_config = ConfigDict(extra="ignore")


class CustomQuestion(_Zoom):
    title: str = ""
    value: str = ""


class Registrant(_Zoom):
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    org: str | None = None
    job_title: str | None = None
    industry: str | None = None
    no_of_employees: str | None = None
    purchasing_time_frame: str | None = None
    role_in_purchase_process: str | None = None
    comments: str | None = None
    country: str | None = None
    state: str | None = None
    city: str | None = None
    custom_questions: list[CustomQuestion] = Field(default_factory=list)


class Participant(_Zoom):
    id: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    join_time: str | None = None
    registrant_id: str | None = None


class ZoomObject(_Zoom):
    id: str
    topic: str | None = None
    host_id: str | None = None
    registrant: Registrant | None = None
    participant: Participant | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        # Zoom sends the webinar id as a number in some events and a string in others.
        return str(v) if isinstance(v, int) else v


class ZoomPayload(_Zoom):
    plainToken: str | None = None  # Zoom's spelling
    object: ZoomObject | None = None


class ZoomWebhook(_Zoom):
    event: str
    # When the event happened, in epoch milliseconds. Zoom retries a failed delivery
    # after 5, 20 and 60 minutes: the time of arrival may be 85 minutes late.
    event_ts: int | None = None
    payload: ZoomPayload


@dataclass(frozen=True)
class Skipped:
    """A well-formed event that holds no lead (a guest without e-mail, the host joining)."""

    reason: str


def _present(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


def event_time(event_ts: int | None) -> str | None:
    """`event_ts` (epoch milliseconds) as an ISO 8601 time; None if absent or no time."""
    if event_ts is None or event_ts <= 0:
        return None
    try:
        seconds, millis = divmod(event_ts, 1000)
        return (datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=millis)).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def registration_lead(obj: ZoomObject, *, event_ts: int | None) -> dict[str, Any] | Skipped:
    """A `webinar.registration_created` as the fields of a `WebinarPersonIn`, dated by the
    event's `event_ts`: the registrant object carries no time of registration."""
    r = obj.registrant
    if r is None:
        return Skipped("the event carries no registrant")
    if not _present(r.email) and not _present(r.phone):
        return Skipped("the registrant has no e-mail or phone")
    name = " ".join(n for n in (_present(r.first_name), _present(r.last_name)) if n)
    fields = {q.title.strip(): q.value for q in r.custom_questions if q.title.strip() and q.value}
    if _present(r.city):
        fields.setdefault("city", r.city or "")
    person: dict[str, Any] = {
        "name": name or None,
        "email": _present(r.email),
        "phone": _present(r.phone),
        "company": _present(r.org),
        "job_title": _present(r.job_title),
        "industry": _present(r.industry),
        "company_size": _present(r.no_of_employees),
        "timeframe": _present(r.purchasing_time_frame),
        "role_in_purchase": _present(r.role_in_purchase_process),
        "message": _present(r.comments),
        "country": _present(r.country),
        "region": _present(r.state),
        "fields": fields,
        "occurred_at": event_time(event_ts),
    }
    return {k: v for k, v in person.items() if v not in (None, {}, "")}


def attendance_lead(
    obj: ZoomObject, *, host_id: str | None, event_ts: int | None
) -> dict[str, Any] | Skipped:
    """A `webinar.participant_joined` as the fields of a `WebinarPersonIn`, dated by the
    participant's `join_time`, else the event's `event_ts`."""
    p = obj.participant
    if p is None:
        return Skipped("the event carries no participant")
    if host_id and host_id in (p.id, p.user_id):
        return Skipped("the host joined; hosts are not leads")
    if not _present(p.email) and not _present(p.phone_number):
        return Skipped("the participant has no e-mail or phone (a guest who did not register)")
    person: dict[str, Any] = {
        "name": _present(p.user_name),
        "email": _present(p.email),
        "phone": _present(p.phone_number),
        "occurred_at": _present(p.join_time) or event_time(event_ts),
    }
    return {k: v for k, v in person.items() if v is not None}
