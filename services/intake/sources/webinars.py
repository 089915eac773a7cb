"""A webinar's registrants and attendees as its leads: the webinar looked up, each person built."""

from __future__ import annotations

from collections.abc import Callable

from services.intake.admin import repository as admin_repository
from services.intake.config import IntakeSettings
from services.intake.leads.schemas import LeadIn, WebinarPersonIn
from services.intake.normalize.snapshot import build_snapshot, new_lead_id
from shared.db import AnyRow, utcnow
from shared.events import LeadSnapshot, LeadSource
from shared.runtime import Runtime
from shared.web import problem


async def webinar_or_404(runtime: Runtime, webinar_id: str) -> AnyRow:
    async with runtime.engine.connect() as conn:
        webinar = await admin_repository.get_webinar(conn, webinar_id)
    if webinar is None:
        raise problem(
            404,
            ["path", "webinar_id"],
            f"no webinar {webinar_id!r}; create it with PUT /v1/webinars/{webinar_id}",
            "not_found",
        )
    return webinar


def builder(
    webinar: AnyRow, settings: IntakeSettings, *, attended: bool
) -> Callable[[WebinarPersonIn], LeadSnapshot]:
    """Turns a person into a lead of this webinar (lenient: see `build_snapshot`)."""
    now = utcnow()

    def build(person: WebinarPersonIn) -> LeadSnapshot:
        return build_snapshot(
            webinar_lead(person, webinar=webinar, attended=attended),
            lead_id=new_lead_id(),
            now=now,
            default_region=settings.default_phone_region,
            form_region=webinar.default_phone_region,
            strict=False,
        )

    return build


def webinar_lead(person: WebinarPersonIn, *, webinar: AnyRow, attended: bool) -> LeadIn:
    """A webinar registrant or attendee as a lead of that webinar; raises ValidationError."""
    data = person.model_dump(exclude_unset=True, exclude={"first_name", "last_name", "consent"})
    if not person.name:
        name = " ".join(n for n in (person.first_name, person.last_name) if n)
        if name:
            data["name"] = name
    source = LeadSource.webinar_attendance if attended else LeadSource.webinar_registration
    return LeadIn.model_validate(
        {
            **data,
            "source": source,
            "webinar_id": webinar.webinar_id,
            "consent": True if person.consent is None else person.consent,
            "consent_text_version": person.consent_text_version or webinar.consent_text_version,
        }
    )
