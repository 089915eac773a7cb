"""`GET /review`: the review meeting's page, one static page (no build step) over the JSON API.

Like the KPI dashboard, the page holds no data and no token: it asks for a reader's
token (or takes `?token=` once into the tab's sessionStorage) and reads
`/v1/definitions/{v}/review`; publishing a suggested draft asks for an admin token each
time and keeps it nowhere. Charts are SVG the script draws: nothing is vendored.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse

STATIC = Path(__file__).resolve().parent / "static"
# Only these files are served: no path from a request ever reaches the file system.
ASSETS = {
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

router = APIRouter(tags=["review"])


@lru_cache(maxsize=4)
def _read(name: str) -> tuple[bytes, str]:
    content = (STATIC / name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _serve(request: Request, content: bytes, etag: str, media_type: str) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@router.get(
    "/review",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The review page"}},
)
async def page(request: Request) -> Response:
    """The review meeting's page: a version's review as tables and charts, the suggested
    edits when the server makes them, and publishing behind `definitions:admin`."""
    html, _ = _read("review.html")
    dev = request.app.state.settings.common.dev
    html = html.replace(
        b'data-dev-mode="false"', b'data-dev-mode="%s"' % (b"true" if dev else b"false")
    )
    etag = '"' + hashlib.sha256(html).hexdigest()[:32] + '"'
    return _serve(request, html, etag, "text/html; charset=utf-8")


@router.get("/review/assets/{name}", include_in_schema=False)
async def asset(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such asset")
    content, etag = _read(name)
    return _serve(request, content, etag, ASSETS[name])
