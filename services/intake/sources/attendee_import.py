"""Webinar attendee CSV files (Zoom's report or any CSV with a column mapping) imported
chunk by chunk."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import IO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.intake import counters
from services.intake.config import IntakeSettings
from services.intake.deps import RuntimeDep, SettingsDep, Writer
from services.intake.errors import JsonBodyRoute, describe, error_items
from services.intake.leads import service
from services.intake.leads.schemas import WebinarPersonIn
from services.intake.normalize.fields import InvalidField
from services.intake.sources import attendee_csv
from services.intake.sources.attendee_csv import Rejected, Row
from services.intake.sources.json_api import idempotency_window
from services.intake.sources.schemas import ImportSummary, RowError
from services.intake.sources.webinars import builder, webinar_or_404
from services.intake.tables import idempotency_keys
from shared.db import AnyRow, utcnow
from shared.events import LeadSnapshot
from shared.idempotency import IdempotencyKey, Slot, fingerprint, idempotent
from shared.runtime import Runtime
from shared.web import problem

router = APIRouter(prefix="/v1/webinars", tags=["webinars"], route_class=JsonBodyRoute)


# Rows stored per transaction: large enough to import quickly, small enough to hold
# its people's locks (and a connection) only briefly.
IMPORT_CHUNK = 200


MAX_LISTED_REJECTIONS = 1000


_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "mapping": {
                            "type": "string",
                            "description": "JSON object: CSV column -> lead field, e.g. "
                            '{"E-mail": "email", "ФИО": "name", "Время входа": "joined_at"}',
                        },
                        "delimiter": {"type": "string", "enum": [",", ";", "tab"]},
                    },
                }
            }
        },
    }
}


async def _read_upload_form(request: Request) -> tuple[UploadFile, dict[str, str], str | None]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise problem(
            415,
            ["header", "Content-Type"],
            "upload the CSV as multipart/form-data with a `file` part",
            "unsupported_media_type",
        )
    try:
        form = await request.form(max_files=1, max_fields=5, max_part_size=64 * 1024)
    except StarletteHTTPException as exc:  # what Starlette's form parser raises
        raise problem(422, ["body"], f"not a readable multipart body: {exc.detail}") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise problem(422, ["body", "file"], "attach the CSV file as the `file` part")
    mapping: dict[str, str] = {}
    raw_mapping = form.get("mapping")
    if isinstance(raw_mapping, str) and raw_mapping.strip():
        try:
            mapping = json.loads(raw_mapping)
        except ValueError as exc:
            raise problem(422, ["body", "mapping"], f"not JSON: {exc}") from exc
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise problem(422, ["body", "mapping"], "a JSON object of column name -> lead field")
        try:
            attendee_csv.check_mapping(mapping)
        except InvalidField as exc:
            raise problem(422, ["body", "mapping"], exc.message) from exc
    delimiter = form.get("delimiter")
    if isinstance(delimiter, str) and delimiter:
        delimiter = "\t" if delimiter in ("tab", "\\t") else delimiter
        if delimiter not in attendee_csv.DELIMITERS:
            raise problem(422, ["body", "delimiter"], "one of `,`, `;` or `tab`")
    else:
        delimiter = None
    return upload, mapping, delimiter


def _file_digest(file: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 16), b""):
        digest.update(block)
    file.seek(0)
    return digest.hexdigest()


@router.post(
    "/{webinar_id}/attendees:import",
    response_model=ImportSummary,
    responses={
        404: {"description": "no such webinar"},
        413: {"description": "file over the size limit (5 MB by default)"},
        415: {"description": "not multipart/form-data"},
        422: {"description": "no file, a bad mapping, or a file with no attendee header"},
    },
    openapi_extra=_CSV_BODY,
)
async def import_attendees(
    request: Request,
    webinar_id: str,
    principal: Writer,
    runtime: RuntimeDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """An attendee list as CSV: Zoom's attendee report as exported, or any CSV whose
    header names the columns (`mapping` maps other names). UTF-8 with or without BOM, or
    Windows-1251; `,` `;` or tab. Read row by row: a bad row is reported with its line
    and reason while the good ones are stored; rows where Zoom says `Attended: No` are
    registrations."""
    upload, mapping, delimiter = await _read_upload_form(request)
    try:
        return await _import_upload(
            request,
            upload,
            mapping,
            delimiter,
            webinar_id,
            principal.name,
            idempotency_key,
            runtime,
            settings,
        )
    finally:
        await upload.close()


async def _import_upload(
    request: Request,
    upload: UploadFile,
    mapping: dict[str, str],
    delimiter: str | None,
    webinar_id: str,
    principal: str,
    idempotency_key: str | None,
    runtime: Runtime,
    settings: IntakeSettings,
) -> JSONResponse:
    webinar = await webinar_or_404(runtime, webinar_id)
    request_hash = ""
    if idempotency_key:
        file_hash = await asyncio.to_thread(_file_digest, upload.file)
        request_hash = fingerprint(
            "POST", request.url.path, {"file": file_hash, "mapping": mapping, "sep": delimiter}
        )
    async with idempotent(
        runtime.engine,
        idempotency_keys,
        principal=principal,
        key=idempotency_key,
        request_hash=request_hash,
        now=utcnow(),
        **idempotency_window(settings),
    ) as slot:
        if slot.replay is not None:
            return slot.replay
        summary = await _import(upload.file, webinar, mapping, delimiter, slot, runtime, settings)
        body = summary.model_dump(mode="json")
        async with runtime.engine.begin() as conn:
            await slot.complete(conn, 200, body)
    return JSONResponse(body)


async def _import(
    file: IO[bytes],
    webinar: AnyRow,
    mapping: dict[str, str],
    delimiter: str | None,
    slot: Slot,
    runtime: Runtime,
    settings: IntakeSettings,
) -> ImportSummary:
    text, encoding, sniffed = await asyncio.to_thread(attendee_csv.open_text, file)
    rows = attendee_csv.read_rows(
        text,
        delimiter or sniffed,
        mapping=mapping,
        timezone=webinar.timezone,
        encoding=encoding,
    )
    accepted = attended = duplicates = 0
    rejected: list[RowError] = []
    rejected_count = 0
    try:
        while True:
            try:
                # File reads block; they happen off the event loop, a chunk at a time.
                chunk = await asyncio.to_thread(_take, rows, IMPORT_CHUNK)
            except InvalidField as exc:
                raise problem(422, ["body", exc.field], exc.message) from exc
            if not chunk:
                break
            stored, errors = _prepare_rows(chunk, webinar, settings)
            async with runtime.engine.begin() as conn:
                results = await service.accept_leads(
                    conn, stored, dedupe_window=timedelta(hours=settings.dedupe_window_hours)
                )
                await slot.renew(conn, utcnow())
            runtime.wake_relay()
            counters.count(stored, results)
            accepted += sum(r.status in ("accepted", "updated") for r in results)
            attended += sum(r.status == "updated" for r in results)
            duplicates += sum(r.status == "duplicate" for r in results)
            rejected_count += len(errors)
            rejected.extend(errors[: max(0, MAX_LISTED_REJECTIONS - len(rejected))])
    finally:
        # The upload belongs to Starlette, which closes it; do not let the wrapper do it.
        text.detach()
    return ImportSummary(
        accepted=accepted,
        attendance_recorded=attended,
        duplicates=duplicates,
        rejected=rejected,
        rejected_count=rejected_count,
    )


def _take(rows: Iterator[Row | Rejected], n: int) -> list[Row | Rejected]:
    return list(itertools.islice(rows, n))


def _prepare_rows(
    chunk: list[Row | Rejected], webinar: AnyRow, settings: IntakeSettings
) -> tuple[list[LeadSnapshot], list[RowError]]:
    registrations = builder(webinar, settings, attended=False)
    attendances = builder(webinar, settings, attended=True)
    stored: list[LeadSnapshot] = []
    errors: list[RowError] = []
    for item in chunk:
        if isinstance(item, Rejected):
            errors.append(RowError(row=item.row, error=item.error))
            continue
        build = attendances if item.attended else registrations
        try:
            stored.append(build(WebinarPersonIn.model_validate(item.person)))
        except ValidationError as exc:
            errors.append(RowError(row=item.row, error=describe(error_items(exc))))
        except InvalidField as exc:
            errors.append(RowError(row=item.row, error=f"{exc.field}: {exc.message}"))
    return stored, errors
