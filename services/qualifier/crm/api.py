"""CRM endpoints: connectors configured and watched (`crm:admin`), and the CRMs' own
notifications, which carry no Leadflow token: each vendor's check (a token, a URL
secret, a signature) is their authentication."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection

from services.qualifier.crm import connectors as configs
from services.qualifier.crm import repository, secrets
from services.qualifier.crm.adapter import IncomingRequest, NotificationRefused
from services.qualifier.crm.schemas import (
    ConnectorStatus,
    ConnectorView,
    NotificationAccepted,
    SyncStarted,
)
from services.qualifier.crm.secrets import AnyConnector
from services.qualifier.crm.vendors import vendor
from services.qualifier.definitions import service as definitions
from services.qualifier.deliveries import repository as deliveries
from services.qualifier.deps import Settings, runtime
from shared.auth import Principal, Scope, require
from shared.db import AnyRow, utcnow
from shared.unit_of_work import UnitOfWork
from shared.web import problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/crm", tags=["crm"])
CrmAdmin = Annotated[Principal, Depends(require(Scope.crm_admin))]
ConnectorId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# A configuration is a page of YAML; a larger body is refused before it is read whole.
CONFIG_MAX_BYTES = 64 * 1024

_CONFIG_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
        "description": "A connector configuration in YAML or JSON (docs/crm.md).",
    }
}


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise problem(413, ["body"], f"the body is over {limit} bytes", "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise problem(413, ["body"], f"the body is over {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _view(row: AnyRow, connector: AnyConnector, warnings: list[str] | None = None) -> ConnectorView:
    return ConnectorView(
        id=connector.id,
        kind=connector.kind,
        config=configs.as_document(connector),
        created_at=row.created_at,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
        warnings=warnings or [],
    )


@router.put(
    "/connectors/{connector_id}",
    response_model=ConnectorView,
    openapi_extra=_CONFIG_BODY,
    responses={
        201: {"description": "created"},
        413: {"description": "over 64 KB"},
        422: {"description": "invalid: each problem names its field (and line)"},
    },
)
async def put_connector(
    connector_id: ConnectorId,
    request: Request,
    response: Response,
    principal: CrmAdmin,
    settings: Settings,
    conn: UnitOfWork,
) -> ConnectorView:
    """Create or replace a connector. Secrets are named, never given: production refuses
    a connector whose environment variables are not set."""
    raw = await _bounded_body(request, CONFIG_MAX_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise problem(422, ["body"], "the configuration must be UTF-8 text") from exc
    try:
        connector = await asyncio.to_thread(configs.parse, text, connector_id)
        production = not settings.common.dev
        configs.check_secrets(connector, production=production, environ=os.environ)
        if production and connector.base_url.scheme != "https":
            raise configs.ConnectorInvalid(
                [
                    configs.Problem(
                        ("base_url",), "production calls CRMs over https only", "value_error"
                    )
                ]
            )
    except configs.ConnectorInvalid as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[p.detail() for p in exc.problems]
        ) from exc
    _, definition = await definitions.active(conn)
    saved = await configs.save(
        conn, connector, source_text=text, by=principal.name, now=utcnow(), definition=definition
    )
    row, _ = await configs.load(conn, connector_id)
    if saved.created:
        response.status_code = status.HTTP_201_CREATED
    runtime(request).wake_after_commit.append(request.app.state.crm_sync.wake)
    return _view(row, connector, saved.warnings)


@router.get("/connectors", response_model=list[ConnectorView])
async def list_connectors(request: Request, _: CrmAdmin) -> list[ConnectorView]:
    async with runtime(request).engine.connect() as conn:
        rows = await repository.connectors(conn)
    return [_view(row, configs.from_row(row)) for row in rows]


@router.get("/connectors/{connector_id}", response_model=ConnectorView, responses={404: {}})
async def get_connector(request: Request, connector_id: ConnectorId, _: CrmAdmin) -> ConnectorView:
    async with runtime(request).engine.connect() as conn:
        row, connector = await _load(conn, connector_id)
    return _view(row, connector)


@router.delete("/connectors/{connector_id}", status_code=204, responses={404: {}})
async def delete_connector(connector_id: ConnectorId, _: CrmAdmin, conn: UnitOfWork) -> None:
    """Stop pushing and pulling; the lead -> record map stays (saving it again resumes)."""
    if not await repository.delete_connector(conn, connector_id):
        raise problem(404, ["path", "connector_id"], f"no CRM connector {connector_id!r}")


@router.get(
    "/connectors/{connector_id}/status", response_model=ConnectorStatus, responses={404: {}}
)
async def connector_status(
    request: Request, connector_id: ConnectorId, _: CrmAdmin
) -> ConnectorStatus:
    """Pushed, pending, parked, last sync, last error: what an operator watches."""
    async with runtime(request).engine.connect() as conn:
        row, connector = await _load(conn, connector_id)
        pushed, skipped = await repository.record_counts(conn, connector_id)
        queue = await deliveries.summary(conn, "crm", connector_id)
        owed = await repository.pulls_owed(conn, connector_id)
    return ConnectorStatus(
        id=connector.id,
        kind=connector.kind,
        enabled=connector.enabled,
        pushed=pushed,
        pending=queue["pending"],
        delivered=queue["delivered"],
        parked=queue["failed"],
        cancelled=queue["cancelled"],
        last_delivered_at=queue["last_delivered_at"],
        pulls_owed=owed,
        skipped=skipped,
        synced_until=row.synced_until,
        last_sync_at=row.last_sync_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        missing_secrets=secrets.missing(connector),
    )


@router.post("/connectors/{connector_id}/sync", response_model=SyncStarted, responses={404: {}})
async def sync_now(request: Request, connector_id: ConnectorId, _: CrmAdmin) -> SyncStarted:
    """A reconciliation round now: records modified since the last one, read back."""
    engine = runtime(request).engine
    async with engine.connect() as conn:
        await _load(conn, connector_id)
    read = await request.app.state.crm_sync.reconcile_due(engine, force=connector_id)
    return SyncStarted(records=read)


async def _load(conn: AsyncConnection, connector_id: str) -> tuple[AnyRow, AnyConnector]:
    try:
        return await configs.load(conn, connector_id)
    except configs.ConnectorNotFound as exc:
        raise problem(404, ["path", "connector_id"], str(exc)) from exc


_NOTIFICATION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed: names the problem"},
    401: {"description": "bad or stale signature"},
    403: {"description": "wrong token, URL secret or account"},
    404: {"description": "no such connector"},
    413: {"description": "too large"},
}


@router.post(
    "/connectors/{connector_id}/notifications",
    response_model=NotificationAccepted,
    responses=_NOTIFICATION_ERRORS,
)
async def notification(
    connector_id: ConnectorId, request: Request, settings: Settings
) -> NotificationAccepted:
    """A CRM's notification (Bitrix24 outbound webhook, HubSpot webhook)."""
    return await _notified(connector_id, request, settings, None)


@router.post(
    "/connectors/{connector_id}/notifications/{secret}",
    response_model=NotificationAccepted,
    responses=_NOTIFICATION_ERRORS,
    include_in_schema=True,
)
async def notification_with_secret(
    connector_id: ConnectorId,
    secret: Annotated[str, Path(max_length=200)],
    request: Request,
    settings: Settings,
) -> NotificationAccepted:
    """A CRM's notification to a URL holding a secret (Kommo, which signs nothing)."""
    return await _notified(connector_id, request, settings, secret)


async def _notified(
    connector_id: str, request: Request, settings: Settings, path_secret: str | None
) -> NotificationAccepted:
    rt = runtime(request)
    body = await _bounded_body(request, settings.crm_notification_max_bytes)
    async with rt.engine.connect() as conn:
        _, connector = await _load(conn, connector_id)
        await conn.rollback()
    if not connector.enabled:
        # Switched off: nothing is believed or read back, and the CRM has nothing to retry.
        log.info("CRM %s: a notification ignored: the connector is disabled", connector_id)
        return NotificationAccepted(records=0, duplicates=0)
    try:
        found = secrets.resolve(connector)
    except secrets.MissingSecret:
        # Nothing to check a notification with: nothing may be believed.
        log.warning(
            "CRM %s: a notification refused: the connector's secrets are not set", connector_id
        )
        raise problem(
            403,
            ["headers"],
            "the connector cannot check notifications: its secrets are not set",
            "forbidden",
        ) from None
    incoming = IncomingRequest(
        method=request.method,
        url=_public_url(request),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        path_secret=path_secret,
        received_at=utcnow(),
    )
    try:
        notices = vendor(connector.kind).parse_notification(connector, found, incoming)
    except NotificationRefused as exc:
        # Our words only (the vendor module guarantees no personal data in them).
        log.warning("CRM %s: a notification refused (%d): %s", connector_id, exc.status_code, exc)
        raise problem(exc.status_code, ["body"], str(exc), "refused") from None
    now = utcnow()
    async with rt.engine.begin() as conn:
        keyed = [n.key for n in notices if n.key is not None]
        new = await repository.take_notices(conn, connector_id, keyed, now)
        wanted = [n.crm_id for n in notices if n.key is None or n.key in new]
        await repository.owe_pulls(conn, connector_id, wanted, now)
    request.app.state.crm_sync.wake()
    return NotificationAccepted(records=len(set(wanted)), duplicates=len(keyed) - len(new))


def _public_url(request: Request) -> str:
    """The URL the CRM called, as HubSpot signs it (behind a proxy, its forwarded form)."""
    proto = request.headers.get("x-forwarded-proto")
    host = request.headers.get("x-forwarded-host")
    url = request.url
    if proto or host:
        url = url.replace(scheme=proto or url.scheme, netloc=host or url.netloc)
    return str(url)
