"""The endpoints without bearer tokens: website forms (plain HTML and Tilda) and Zoom webhooks.

Forms are guarded by the form's allowed origins (or its server key), a honeypot field,
a minimum fill time, per-IP and per-form rate limits and the body size limit. Zoom
proves itself by signing each request with the shared secret.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.intake import configuration, metrics, repository, service, zoom
from services.intake.deps import FormLimitsDep, RuntimeDep, SettingsDep
from services.intake.domain import InvalidField
from services.intake.errors import error_items
from services.intake.forms import (
    check_fill_time,
    is_tilda,
    is_tilda_test,
    map_submission,
    parse_rendered_at,
    request_origin,
)
from services.intake.ratelimit import client_key
from services.intake.schemas import LeadIn, WebinarPersonIn
from shared.db import AnyRow, utcnow
from shared.web import problem, retry_after

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["public"])

MAX_FORM_FIELDS = 200
FORM_KEY_HEADER = "X-Leadflow-Form-Key"
_FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            ct: {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
            for ct in _FORM_CONTENT_TYPES
        },
    }
}


async def _form_pairs(request: Request, max_part_bytes: int) -> list[tuple[str, str]]:
    """The submitted (name, value) pairs, in order; UTF-8 only, no files."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = await request.body()
        try:
            return parse_qsl(
                # Percent-encoded as browsers send it, or raw UTF-8 as `curl -d` does.
                body.decode("utf-8"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=MAX_FORM_FIELDS,
            )
        except UnicodeDecodeError as exc:
            raise problem(422, ["body"], "the form data is not UTF-8") from exc
        except ValueError as exc:
            raise problem(422, ["body"], f"more than {MAX_FORM_FIELDS} fields") from exc
    try:
        form = await request.form(
            max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=max_part_bytes
        )
    except StarletteHTTPException as exc:  # what Starlette's form parser raises
        detail = str(exc.detail)
        if "Too many files" in detail:
            detail = "this endpoint takes no file uploads"
        raise problem(422, ["body"], f"not a readable form: {detail}") from exc
    return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]


@router.post(
    "/forms/{form_id}/submissions",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"description": "a server post (Tilda): stored, or Tilda's `test` ping"},
        303: {"description": "a browser post to a form with a thank-you page"},
        403: {"description": "an origin the form does not allow, or a wrong server key"},
        404: {"description": "no such form"},
        413: {"description": "body over the size limit"},
        415: {"description": "not a form post"},
        422: {"description": "invalid submission, naming the form field"},
        429: {"description": "too many submissions; see Retry-After"},
    },
    openapi_extra=_FORM_BODY,
)
async def submit_form(
    request: Request,
    form_id: str,
    runtime: RuntimeDep,
    settings: SettingsDep,
    limits: FormLimitsDep,
    key: Annotated[str | None, Query(description="the form's server key (Tilda)")] = None,
) -> Response:
    """What a website form posts: a plain HTML `<form>` (urlencoded or multipart) from a
    page on one of the form's origins, or a Tilda webhook carrying the form's server key.

    A browser is redirected (303) to the thank-you page when the form has one; otherwise,
    and for servers, the answer is the same whether the lead is new, a duplicate or the
    work of a bot (honeypot): nothing here tells a client whom we already know.
    """
    now = utcnow()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _FORM_CONTENT_TYPES:
        raise problem(
            415,
            ["header", "Content-Type"],
            "post the form as application/x-www-form-urlencoded or multipart/form-data",
            "unsupported_media_type",
        )
    server_key = key or request.headers.get(FORM_KEY_HEADER)
    client = client_key(request.client.host) if request.client else "unknown"
    # Checked before the database is asked anything, and for server posts too: a flood
    # costs little, and a made-up key is no way around the limit.
    _limit(limits.per_ip.acquire(client), "from this address")
    async with runtime.engine.connect() as conn:
        form = await repository.get_form(conn, form_id)
    if form is None:
        raise problem(404, ["path", "form_id"], f"no form {form_id!r}", "not_found")
    cors = _check_access(form, server_key, request)
    pairs = await _form_pairs(request, settings.max_json_bytes)
    if is_tilda_test(pairs):
        return PlainTextResponse("ok")
    spec = configuration.form_spec(form)
    mapped = map_submission(pairs, spec, referer=request.headers.get("referer"))
    if mapped.honeypot_filled:
        metrics.refused("honeypot")
    try:
        if not mapped.honeypot_filled and mapped.rendered_at is not None:
            rendered_at = parse_rendered_at(mapped.rendered_at)
            try:
                check_fill_time(rendered_at, now, form.min_fill_seconds)
            except InvalidField:
                metrics.refused("fill_time")
                raise
        lead = LeadIn.model_validate(mapped.lead)
        snapshot = service.build_snapshot(
            lead,
            lead_id=service.new_lead_id(),
            now=now,
            default_region=settings.default_phone_region,
            form_region=form.default_phone_region,
            consent_text_version=form.consent_text_version,
            strict=False,
            honeypot_filled=mapped.honeypot_filled,
        )
    except (InvalidField, ValidationError) as exc:
        if mapped.honeypot_filled:
            # A bot gets the answer a person would; there is nothing worth storing.
            log.info("form %s: honeypot filled and nothing valid to store", form_id)
            return _thanks(form.thank_you_url, server_key is not None, cors)
        raise _form_error(exc, mapped.form_field, cors) from exc
    if not mapped.honeypot_filled:
        # Only a post stored as a person's takes from the form's bucket: bots' and broken
        # posts from many addresses would otherwise lock every visitor out of the form.
        # They take from their own address's bucket (above).
        _limit(
            limits.per_form.acquire(form_id, per_minute=form.rate_limit_per_minute),
            "to this form",
            cors,
        )
    async with runtime.engine.begin() as conn:
        result = await service.accept_lead(
            conn, snapshot, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
        )
    runtime.wake_relay()
    metrics.count([snapshot], [result])
    if is_tilda(pairs):
        return PlainTextResponse("ok")
    return _thanks(form.thank_you_url, server_key is not None, cors)


def _check_access(form: AnyRow, server_key: str | None, request: Request) -> dict[str, str]:
    """Raise 403 unless a server shows the form's key or a browser posts from an allowed
    origin; return the CORS headers the answer gets (for a browser's `fetch`)."""
    if server_key:
        presented = configuration.server_key_hash(server_key)
        if form.server_key_sha256 is None or not hmac.compare_digest(
            presented, form.server_key_sha256
        ):
            metrics.refused("server_key")
            raise problem(403, ["query", "key"], "not this form's server key", "forbidden")
        return {}
    origin = request_origin(request.headers.get("origin"), request.headers.get("referer"))
    if origin is None or origin not in form.allowed_origins:
        metrics.refused("origin")
        raise problem(
            403,
            ["header", "Origin"],
            "post from a page on one of the form's allowed origins, or with its server key"
            if origin is None
            else f"{origin} may not post this form",
            "forbidden",
        )
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _limit(wait: float, what: str, headers: dict[str, str] | None = None) -> None:
    if wait > 0:
        metrics.refused("rate_limited")
        after = retry_after(wait)
        raise problem(
            429,
            ["request"],
            f"too many submissions {what}; retry in {after} s",
            "rate_limited",
            headers={**(headers or {}), "Retry-After": after},
        )


def _thanks(thank_you_url: str | None, server: bool, cors: dict[str, str]) -> Response:
    if thank_you_url and not server:
        return RedirectResponse(thank_you_url, status_code=303, headers=cors)
    return JSONResponse({"status": "accepted"}, status_code=202, headers=cors)


def _form_error(
    exc: InvalidField | ValidationError, form_field: Any, cors: dict[str, str]
) -> HTTPException:
    """A 422 that names the field as the form calls it (`Email`, not `email`)."""
    items: list[dict[str, Any]]
    if isinstance(exc, InvalidField):
        items = [
            {"loc": ["body", form_field(exc.field)], "msg": exc.message, "type": "value_error"}
        ]
    else:
        items = error_items(exc, ("body",))
        for item in items:
            if len(item["loc"]) > 1 and item["loc"][1] != "fields":
                item["loc"][1] = form_field(item["loc"][1])
            elif len(item["loc"]) > 2:
                item["loc"] = ["body", *item["loc"][2:]]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=items, headers=cors)


@router.post(
    "/webhooks/zoom",
    tags=["webhooks"],
    responses={
        200: {"description": "handled, the URL-validation answer, or an event we do not use"},
        401: {"description": "missing, stale or wrong x-zm-signature / x-zm-request-timestamp"},
        404: {"description": "Zoom webhooks are not configured (no secret token)"},
        422: {"description": "a signed body that is not a Zoom event we can read"},
    },
)
async def zoom_webhook(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> Response:
    """Zoom's event notifications: `webinar.registration_created` (a registrant) and
    `webinar.participant_joined` (attendance), plus the `endpoint.url_validation`
    challenge. Every request must carry a valid `x-zm-signature` made at most five
    minutes before (`x-zm-request-timestamp`)."""
    secret = settings.zoom_secret()
    if secret is None:
        raise problem(
            404,
            ["path"],
            "Zoom webhooks are off: set LEADFLOW_INTAKE_ZOOM_SECRET_TOKEN",
            "not_found",
        )
    body = await request.body()
    try:
        zoom.verify(
            secret=secret,
            timestamp=request.headers.get("x-zm-request-timestamp"),
            signed=request.headers.get("x-zm-signature"),
            body=body,
            now=time.time(),
            max_age_seconds=settings.zoom_max_age_seconds,
        )
    except zoom.ZoomAuthError as exc:
        metrics.refused("zoom_signature")
        raise problem(401, ["header", exc.header], exc.message, "unauthorized") from exc
    try:
        hook = zoom.ZoomWebhook.model_validate_json(body)
    except ValidationError as exc:
        raise HTTPException(422, detail=error_items(exc, ("body",))) from exc
    if hook.event == zoom.URL_VALIDATION:
        if not hook.payload.plainToken:
            raise problem(422, ["body", "payload", "plainToken"], "the challenge has no plainToken")
        return JSONResponse(zoom.url_validation_answer(secret, hook.payload.plainToken))
    if hook.event not in (zoom.REGISTRATION_CREATED, zoom.PARTICIPANT_JOINED):
        return JSONResponse({"status": "ignored", "reason": f"Leadflow does not use {hook.event}"})
    obj = hook.payload.object
    if obj is None:
        raise problem(422, ["body", "payload", "object"], "the event has no object")
    async with runtime.engine.connect() as conn:
        webinar = await repository.get_webinar_by_zoom_id(conn, obj.id)
    if webinar is None:
        log.warning("Zoom event %s for Zoom webinar %s, which no webinar links", hook.event, obj.id)
        return JSONResponse(
            {
                "status": "ignored",
                "reason": f"no webinar is linked to Zoom webinar {obj.id} "
                "(set zoom_webinar_id with PUT /v1/webinars/{webinar_id})",
            }
        )
    attended = hook.event == zoom.PARTICIPANT_JOINED
    person = (
        zoom.attendance_lead(obj, host_id=obj.host_id, event_ts=hook.event_ts)
        if attended
        else zoom.registration_lead(obj, event_ts=hook.event_ts)
    )
    if isinstance(person, zoom.Skipped):
        return JSONResponse({"status": "skipped", "reason": person.reason})
    now = utcnow()
    try:
        snapshot = service.build_snapshot(
            service.webinar_lead(
                WebinarPersonIn.model_validate(person), webinar=webinar, attended=attended
            ),
            lead_id=service.new_lead_id(),
            now=now,
            default_region=settings.default_phone_region,
            form_region=webinar.default_phone_region,
            strict=False,
        )
    except ValidationError as exc:
        raise HTTPException(422, detail=error_items(exc, ("body", "payload", "object"))) from exc
    except InvalidField as exc:
        raise problem(422, ["body", "payload", "object", exc.field], exc.message) from exc
    async with runtime.engine.begin() as conn:
        result = await service.accept_lead(
            conn, snapshot, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
        )
    runtime.wake_relay()
    metrics.count([snapshot], [result])
    return JSONResponse(result.model_dump(mode="json"))
