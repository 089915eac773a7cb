"""`GET /dashboard`: one static page (no build step) that reads the same JSON API.

The page holds no data and no token: it asks for a token (or takes `?token=` once and
keeps it in the tab's sessionStorage), then calls /v1/kpi/* with it. In dev mode the
token field is prefilled with `dev`, the token dev mode accepts anyway; in production
nothing is prefilled. Chart.js is vendored (static/vendor, see fetch-chartjs.sh).
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
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "chart.umd.min.js": ("vendor/chart.umd.min.js", "text/javascript; charset=utf-8"),
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

router = APIRouter(tags=["dashboard"])


@lru_cache(maxsize=8)
def _read(relative: str) -> tuple[bytes, str]:
    content = (STATIC / relative).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _serve(request: Request, content: bytes, etag: str, media_type: str) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The dashboard page"}},
)
async def page(request: Request) -> Response:
    """The KPI dashboard: one page that reads /v1/kpi/* with a token the reader enters."""
    html, _ = _read("dashboard.html")
    dev = request.app.state.settings.common.dev
    html = html.replace(
        b'data-dev-mode="false"', b'data-dev-mode="%s"' % (b"true" if dev else b"false")
    )
    etag = '"' + hashlib.sha256(html).hexdigest()[:32] + '"'
    return _serve(request, html, etag, "text/html; charset=utf-8")


@router.get("/dashboard/assets/{name}", include_in_schema=False)
async def asset(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such asset")
    relative, media_type = ASSETS[name]
    content, etag = _read(relative)
    return _serve(request, content, etag, media_type)
