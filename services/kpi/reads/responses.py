"""Answers over HTTP: JSON or CSV (`format=` or `Accept: text/csv`), with ETag and caching.

The ETag is a hash of the exact bytes of the answer, so it changes exactly when the
answer does (new events, a plan, a rebuild that changed something) and an
`If-None-Match` that still matches gets a 304 without a body.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import Request, Response

from services.kpi.reads.formatting import csv_text
from shared.web import unprocessable

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv; charset=utf-8; header=present"
# Caches may keep an answer but must ask again each time (cheap with If-None-Match);
# it is the caller's (Authorization varies), so shared caches keep none.
CACHE_CONTROL = "private, no-cache"
FORMATS = ("json", "csv")

Rows = tuple[Sequence[str], Iterable[Sequence[Any]]]


def wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        if fmt not in FORMATS:
            raise unprocessable(
                ["query", "format"], f"unknown format {fmt!r}; expected json or csv"
            )
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() == "text/csv" for part in accept.split(","))


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_text(cell) for cell in row])
    return buffer.getvalue().encode()


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def respond(
    request: Request,
    *,
    body: Any,
    rows: Rows,
    fmt: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    if wants_csv(request, fmt):
        content, media_type = csv_bytes(*rows), CSV_TYPE
    else:
        content, media_type = orjson.dumps(body), JSON_TYPE
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {
        **(headers or {}),
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept, Authorization",
    }
    if request.method in ("GET", "HEAD") and _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)
