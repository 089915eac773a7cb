"""Form and webinar configuration use cases (and what dev mode starts with). Never commit."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.admin import repository
from services.intake.admin.schemas import FormConfig, FormConfigIn, WebinarConfig, WebinarConfigIn
from services.intake.sources.forms import FormSpec
from shared.db import AnyRow


def form_spec(form: AnyRow) -> FormSpec:
    return FormSpec(
        form_id=form.form_id,
        field_map=form.field_map,
        honeypot_field=form.honeypot_field,
        consent_field=form.consent_field,
        consent_text_version=form.consent_text_version,
    )


def form_config(form: AnyRow) -> FormConfig:
    return FormConfig.model_validate(
        {**form._mapping, "server_key_set": form.server_key_sha256 is not None}
    )


def server_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def save_form(
    conn: AsyncConnection, form_id: str, config: FormConfigIn, now: datetime
) -> tuple[FormConfig, bool]:
    values = config.model_dump(exclude={"server_key"})
    # A server key omitted from a PUT is kept: it is never shown, so it cannot be sent back.
    if "server_key" in config.model_fields_set:
        key = config.server_key
        values["server_key_sha256"] = server_key_hash(key.get_secret_value()) if key else None
    created = await repository.put_form(conn, form_id, values, now)
    form = await repository.get_form(conn, form_id)
    assert form is not None
    return form_config(form), created


def webinar_config(webinar: AnyRow) -> WebinarConfig:
    return WebinarConfig.model_validate(dict(webinar._mapping))


class ZoomIdTaken(ValueError):
    def __init__(self, other: str) -> None:
        super().__init__(f"Zoom webinar id already linked to webinar {other!r}")
        self.other = other


async def save_webinar(
    conn: AsyncConnection, webinar_id: str, config: WebinarConfigIn, now: datetime
) -> tuple[WebinarConfig, bool]:
    if config.zoom_webinar_id:
        other = await repository.zoom_id_taken_by(conn, config.zoom_webinar_id, webinar_id)
        if other is not None:
            raise ZoomIdTaken(other)
    created = await repository.put_webinar(conn, webinar_id, config.model_dump(), now)
    webinar = await repository.get_webinar(conn, webinar_id)
    assert webinar is not None
    return webinar_config(webinar), created


# What dev mode starts with, so `make run` has a form and a webinar to post to.
DEV_FORM_ID = "contact-us"
DEV_WEBINAR_ID = "webinar-demo"


async def seed_dev_config(conn: AsyncConnection, now: datetime) -> None:
    """Create the dev form and webinar unless they exist (an admin's edits are kept)."""
    form = FormConfigIn(
        name="Contact us (dev)",
        allowed_origins=["http://localhost"],
        honeypot_field="website",
        consent_text_version="privacy-dev-1",
    )
    await repository.insert_form_if_absent(
        conn, DEV_FORM_ID, form.model_dump(exclude={"server_key"}), now
    )
    webinar = WebinarConfigIn(title="Demo webinar (dev)", consent_text_version="webinar-dev-1")
    await repository.insert_webinar_if_absent(conn, DEV_WEBINAR_ID, webinar.model_dump(), now)
