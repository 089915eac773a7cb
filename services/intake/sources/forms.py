"""Website form submissions (plain HTML forms and Tilda webhooks) turned into leads. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from services.intake.normalize.fields import InvalidField, utm_from_url

# What a form field may be mapped onto: the lead's fields, UTM parameters one by one,
# first and last name (joined into `name`), and the time the page rendered the form.
UTM_TARGETS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
FORM_TARGETS = (
    "name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "job_title",
    "industry",
    "company_size",
    "country",
    "region",
    "message",
    "services",
    "budget",
    "timeframe",
    "role_in_purchase",
    "consent",
    "page_url",
    "referrer",
    *UTM_TARGETS,
    "rendered_at",
)
# Form fields copied to the lead as they are (name, services and budget are built).
_COPIED = (
    "email",
    "phone",
    "company",
    "job_title",
    "industry",
    "company_size",
    "country",
    "region",
    "message",
    "timeframe",
    "role_in_purchase",
    "referrer",
)
# Tilda describes the submission in these; `COOKIES` (the visitor's cookies, when the site
# owner ticks the box) is dropped: it is tracking data, not an answer.
_TILDA_META = {"tranid": "tilda_tranid", "formid": "tilda_formid", "formname": "tilda_formname"}
_TILDA_DROPPED = {"cookies"}
_CONSENT_NO = {"", "0", "no", "false", "off", "n", "нет"}
# A render time this far ahead of our clock is not clock skew but a forged or broken value.
_MAX_RENDER_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class FormSpec:
    """What turning a submission into a lead needs to know of the form's configuration."""

    form_id: str
    field_map: Mapping[str, str]
    honeypot_field: str | None
    consent_field: str | None
    consent_text_version: str | None


@dataclass(frozen=True)
class MappedSubmission:
    lead: dict[str, Any]  # the fields of a `LeadIn`
    honeypot_filled: bool
    rendered_at: str | None  # as sent; `parse_rendered_at` reads it
    # Lead field -> the form's own field name, so an error names what the page calls it.
    names: dict[str, str]

    def form_field(self, lead_field: str) -> str:
        return self.names.get(lead_field, lead_field)


def is_tilda_test(pairs: Sequence[tuple[str, str]]) -> bool:
    """Tilda checks a new webhook with a lone `test=test`: answer 200, store nothing."""
    return [(k.lower(), v) for k, v in pairs] == [("test", "test")]


def is_tilda(pairs: Sequence[tuple[str, str]]) -> bool:
    names = {k.lower() for k, _ in pairs}
    return "tranid" in names and "formid" in names


def map_submission(
    pairs: Sequence[tuple[str, str]], spec: FormSpec, *, referer: str | None = None
) -> MappedSubmission:
    """Read a submission's (name, value) pairs the way the form's configuration says.

    A field maps onto a lead field by the form's `field_map`, else by its own name
    (case-insensitively, so Tilda's `Email` and `Phone` need no mapping); anything else
    is a free-form answer kept in `fields`. Blank inputs count as not answered.
    """
    scalars: dict[str, str] = {}
    names: dict[str, str] = {}
    services: list[str] = []
    fields: dict[str, str] = {}
    honeypot_filled = False
    consent_value: str | None = None
    for name, raw in pairs:
        value = raw.strip()
        if spec.honeypot_field and name == spec.honeypot_field:
            honeypot_filled = honeypot_filled or bool(value)
            continue
        if spec.consent_field and name == spec.consent_field:
            consent_value = value if consent_value in (None, "") else consent_value
            names["consent"] = name
            continue
        lowered = name.lower()
        if lowered in _TILDA_DROPPED:
            continue
        target = spec.field_map.get(name) or (lowered if lowered in FORM_TARGETS else None)
        if target is None and lowered in _TILDA_META:
            target, name = None, _TILDA_META[lowered]
        if not value:
            continue
        if target is not None:
            names.setdefault(target, name)
        if target == "services":
            services.extend(s.strip() for s in re.split(r"[,;\n]", value) if s.strip())
        elif target == "consent":
            consent_value = value if consent_value in (None, "") else consent_value
        elif target is not None:
            # The first answer wins: a form that repeats a field name means one thing by it.
            scalars.setdefault(target, value)
        else:
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
    lead: dict[str, Any] = {"source": "web_form", "form_id": spec.form_id}
    for key in _COPIED:
        if key in scalars:
            lead[key] = scalars[key]
    name = scalars.get("name") or " ".join(
        scalars[k] for k in ("first_name", "last_name") if k in scalars
    )
    if name:
        lead["name"] = name
    if services:
        lead["services"] = services
    if "budget" in scalars:
        budget = parse_budget(scalars["budget"])
        if budget is None:
            fields["budget"] = scalars["budget"]
        else:
            lead["budget"] = budget
    # The page the form sits on: sent by the page, else the browser's Referer.
    page_url = scalars.get("page_url") or referer
    if page_url:
        lead["page_url"] = page_url
    utm = utm_from_url(page_url)
    utm.update({k[4:]: scalars[k] for k in UTM_TARGETS if k in scalars})
    if utm:
        lead["utm"] = utm
    if spec.consent_field is None:
        lead["consent"] = True
    else:
        lead["consent"] = consent_value is not None and consent_value.lower() not in _CONSENT_NO
    if spec.consent_text_version:
        lead["consent_text_version"] = spec.consent_text_version
    if fields:
        lead["fields"] = fields
    for first_or_last in ("first_name", "last_name"):
        if first_or_last in names:
            names.setdefault("name", names[first_or_last])
    return MappedSubmission(
        lead=lead,
        honeypot_filled=honeypot_filled,
        rendered_at=scalars.get("rendered_at"),
        names=names,
    )


def parse_budget(raw: str) -> Decimal | None:
    """`200 000 ₽`, `150000.50`, `1,5 млн`? Only the first two: an amount, or None."""
    text = re.sub(r"[\s\u00a0\u202f]|руб\.?|р\.|₽|\$|€|rub|usd|eur", "", raw.lower())
    if re.fullmatch(r"\d+,\d{1,2}", text):
        text = text.replace(",", ".")
    elif re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d{1,2})?", text):
        text = text.replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def parse_rendered_at(raw: str) -> datetime:
    """When the page showed the form: Unix seconds, JavaScript's milliseconds, or ISO 8601."""
    try:
        number = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise InvalidField(
                "rendered_at", "not a time: send Date.now() or an ISO 8601 time"
            ) from exc
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if number != number or number <= 0 or number > 1e14:  # NaN, or not a plausible time
        raise InvalidField("rendered_at", "not a time: send Date.now() or an ISO 8601 time")
    seconds = number / 1000 if number > 1e11 else number
    return datetime.fromtimestamp(seconds, UTC)


def check_fill_time(rendered_at: datetime | None, now: datetime, min_seconds: float) -> None:
    """People need a few seconds to fill a form; a script posting at once is refused."""
    if rendered_at is None:
        return
    if rendered_at > now + _MAX_RENDER_SKEW:
        raise InvalidField("rendered_at", "the form's render time lies in the future")
    elapsed = (now - rendered_at).total_seconds()
    if elapsed < min_seconds:
        raise InvalidField(
            "rendered_at",
            f"the form was sent {max(elapsed, 0):.1f} s after it was shown; "
            f"this form needs at least {min_seconds:g} s",
        )


def request_origin(origin: str | None, referer: str | None) -> str | None:
    """The origin a browser posted from: its Origin header, else its Referer's origin.

    `Origin: null` (sandboxed frames, file:// pages, no-referrer policies) is returned
    as "null", which no form allows.
    """
    if origin:
        return origin.strip().lower() if origin.strip() != "null" else "null"
    if referer:
        try:
            parts = urlsplit(referer)
            port = parts.port
        except ValueError:
            return "null"
        if parts.scheme and parts.hostname:
            default = {"http": 80, "https": 443}.get(parts.scheme)
            suffix = f":{port}" if port and port != default else ""
            return f"{parts.scheme}://{parts.hostname}{suffix}".lower()
        return "null"
    return None
