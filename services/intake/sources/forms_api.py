"""Website forms (plain HTML and Tilda), posted by browsers without bearer tokens.

Forms are guarded by the form's allowed origins (or its server key), a honeypot field,
a minimum fill time, per-IP and per-form rate limits and the body size limit.
"""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.intake import counters
from services.intake.admin import repository as admin_repository
from services.intake.admin.service import form_spec, server_key_hash
from services.intake.deps import FormLimitsDep, RuntimeDep, SettingsDep
from services.intake.errors import error_items
from services.intake.leads import service
from services.intake.leads.schemas import LeadIn
from services.intake.normalize.fields import InvalidField
from services.intake.normalize.snapshot import build_snapshot, new_lead_id
from services.intake.sources.forms import (
    check_fill_time,
    is_tilda,
    is_tilda_test,
    map_submission,
    parse_rendered_at,
    request_origin,
)
from services.intake.sources.ratelimit import client_key
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
        form = await admin_repository.get_form(conn, form_id)
    if form is None:
        raise problem(404, ["path", "form_id"], f"no form {form_id!r}", "not_found")
    cors = _check_access(form, server_key, request)
    pairs = await _form_pairs(request, settings.max_json_bytes)
    if is_tilda_test(pairs):
        return PlainTextResponse("ok")
    spec = form_spec(form)
    mapped = map_submission(pairs, spec, referer=request.headers.get("referer"))
    if mapped.honeypot_filled:
        counters.refused("honeypot")
    try:
        if not mapped.honeypot_filled and mapped.rendered_at is not None:
            rendered_at = parse_rendered_at(mapped.rendered_at)
            try:
                check_fill_time(rendered_at, now, form.min_fill_seconds)
            except InvalidField:
                counters.refused("fill_time")
                raise
        lead = LeadIn.model_validate(mapped.lead)
        snapshot = build_snapshot(
            lead,
            lead_id=new_lead_id(),
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
    counters.count([snapshot], [result])
    if is_tilda(pairs):
        return PlainTextResponse("ok")
    return _thanks(form.thank_you_url, server_key is not None, cors)


def _check_access(form: AnyRow, server_key: str | None, request: Request) -> dict[str, str]:
    """Raise 403 unless a server shows the form's key or a browser posts from an allowed
    origin; return the CORS headers the answer gets (for a browser's `fetch`)."""
    if server_key:
        presented = server_key_hash(server_key)
        if form.server_key_sha256 is None or not hmac.compare_digest(
            presented, form.server_key_sha256
        ):
            counters.refused("server_key")
            raise problem(403, ["query", "key"], "not this form's server key", "forbidden")
        return {}
    origin = request_origin(request.headers.get("origin"), request.headers.get("referer"))
    if origin is None or origin not in form.allowed_origins:
        counters.refused("origin")
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
        counters.refused("rate_limited")
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
