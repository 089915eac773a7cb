"""Configuration endpoints (scope `definitions:admin`): the forms and webinars leads come from."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Response, status

from services.intake.admin import repository, service
from services.intake.admin.schemas import FormConfig, FormConfigIn, WebinarConfig, WebinarConfigIn
from services.intake.deps import Admin, RuntimeDep
from services.intake.errors import JsonBodyRoute
from services.intake.leads.schemas import Identifier
from shared.db import utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import problem

router = APIRouter(prefix="/v1", tags=["configuration"], route_class=JsonBodyRoute)


def _concurrent(param: str) -> Exception:
    # Two PUTs raced (the same new id, or the same Zoom id): the loser says so.
    return problem(
        409, ["path", param], "changed by another request at the same time; retry", "conflict"
    )


def _no_form(form_id: str) -> Exception:
    return problem(404, ["path", "form_id"], f"no form {form_id!r}", "not_found")


def _no_webinar(webinar_id: str) -> Exception:
    return problem(404, ["path", "webinar_id"], f"no webinar {webinar_id!r}", "not_found")


@router.get("/forms", response_model=list[FormConfig])
async def list_forms(_: Admin, runtime: RuntimeDep) -> list[FormConfig]:
    async with runtime.engine.connect() as conn:
        return [service.form_config(f) for f in await repository.list_forms(conn)]


@router.get("/forms/{form_id}", response_model=FormConfig, responses={404: {}})
async def get_form(form_id: str, _: Admin, runtime: RuntimeDep) -> FormConfig:
    async with runtime.engine.connect() as conn:
        form = await repository.get_form(conn, form_id)
    if form is None:
        raise _no_form(form_id)
    return service.form_config(form)


@router.put(
    "/forms/{form_id}",
    response_model=FormConfig,
    responses={
        201: {"model": FormConfig, "description": "created"},
        409: {"description": "another request created the same form at the same moment"},
    },
)
async def put_form(
    form_id: Identifier, config: FormConfigIn, _: Admin, conn: UnitOfWork, response: Response
) -> FormConfig:
    """Create or replace a form. `server_key`, when given, is stored as a hash and never
    shown again; omitting it keeps the stored one."""
    try:
        saved, created = await service.save_form(conn, form_id, config, utcnow())
    except sa.exc.IntegrityError as exc:
        raise _concurrent("form_id") from exc
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return saved


@router.delete("/forms/{form_id}", status_code=204, responses={404: {}})
async def delete_form(form_id: str, _: Admin, conn: UnitOfWork) -> Response:
    """The form stops taking submissions; its leads stay."""
    if not await repository.delete_form(conn, form_id):
        raise _no_form(form_id)
    return Response(status_code=204)


@router.get("/webinars", response_model=list[WebinarConfig])
async def list_webinars(_: Admin, runtime: RuntimeDep) -> list[WebinarConfig]:
    async with runtime.engine.connect() as conn:
        return [service.webinar_config(w) for w in await repository.list_webinars(conn)]


@router.get("/webinars/{webinar_id}", response_model=WebinarConfig, responses={404: {}})
async def get_webinar(webinar_id: str, _: Admin, runtime: RuntimeDep) -> WebinarConfig:
    async with runtime.engine.connect() as conn:
        webinar = await repository.get_webinar(conn, webinar_id)
    if webinar is None:
        raise _no_webinar(webinar_id)
    return service.webinar_config(webinar)


@router.put(
    "/webinars/{webinar_id}",
    response_model=WebinarConfig,
    responses={
        201: {"model": WebinarConfig, "description": "created"},
        409: {"description": "the Zoom webinar id is linked to another webinar, or a race"},
    },
)
async def put_webinar(
    webinar_id: Identifier,
    config: WebinarConfigIn,
    _: Admin,
    conn: UnitOfWork,
    response: Response,
) -> WebinarConfig:
    """Create or replace a webinar; `zoom_webinar_id` links Zoom's webhooks to it."""
    try:
        saved, created = await service.save_webinar(conn, webinar_id, config, utcnow())
    except service.ZoomIdTaken as exc:
        raise problem(409, ["body", "zoom_webinar_id"], str(exc), "conflict") from exc
    except sa.exc.IntegrityError as exc:
        raise _concurrent("webinar_id") from exc
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return saved


@router.delete("/webinars/{webinar_id}", status_code=204, responses={404: {}})
async def delete_webinar(webinar_id: str, _: Admin, conn: UnitOfWork) -> Response:
    """The webinar stops taking registrants and attendees; its leads stay."""
    if not await repository.delete_webinar(conn, webinar_id):
        raise _no_webinar(webinar_id)
    return Response(status_code=204)
