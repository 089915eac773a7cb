"""What of a lead names a person, and the lead without it. Pure."""

from __future__ import annotations

from services.intake.normalize.fields import strip_query
from shared.events import LeadSnapshot


def redact(snapshot: LeadSnapshot) -> LeadSnapshot:
    """The lead without the person: keeps id, source, origin, UTM, times and the business facts.

    Removed: name, e-mail, phone, company and job title (together they name a person),
    free text and free-form answers, and page/referrer query strings.
    """
    return snapshot.model_copy(
        update={
            "name": None,
            "email": None,
            "phone": None,
            "company": None,
            "job_title": None,
            "message": None,
            "fields": {},
            "page_url": strip_query(snapshot.page_url),
            "referrer": strip_query(snapshot.referrer),
        }
    )
