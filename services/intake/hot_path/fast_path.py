"""Routes that answer their common request without FastAPI's per-request machinery.

Solving a route's dependencies, reading its parameters into models and the telemetry
operations around them cost more CPU than intake spends on accepting a lead. A route made
by `with_fast_path` offers each request first to a plain function, which answers the
common, valid request itself or declines (None) having done nothing anyone can see; the
route's FastAPI handler then answers as it always has. So every refusal (401, 403, 415,
422 naming the field) still comes from the declared endpoint and its dependencies, and
so does the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from services.intake.errors import Handler, json_body_errors
from services.intake.hot_path.front import JsonAnswer, raise_front_failure
from shared.auth import Authenticator, Scope

FastPath = Callable[[Request], Awaitable[JsonAnswer | None]]

# Content types FastAPI reads as JSON (errors._is_json), as clients send them; any other
# spelling is left to FastAPI.
JSON_CONTENT_TYPES = frozenset(
    {b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"}
)


def with_fast_path(fast: FastPath) -> type[APIRoute]:
    """A JSON route class whose requests `fast` may answer before FastAPI's handler."""

    class FastPathRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def answer(request: Request) -> Response:
                raise_front_failure(request)
                # Overridden dependencies (tests do that) are FastAPI's to apply.
                if not request.app.dependency_overrides:
                    answer = await fast(request)
                    if answer is not None:
                        return answer.response()
                return await handler(request)

            return json_body_errors(answer)

    return FastPathRoute


async def json_body(request: Request, scope: Scope, *, declined: Collection[bytes]) -> bytes | None:
    """The body of a request FastAPI would take up to validating the body: JSON, with a
    bearer token holding `scope` and none of the `declined` headers; else None, unread."""
    if MAX_BODY_SIZE_SCOPE_KEY in request.scope:
        return None  # Starlette's own body limit: its errors are FastAPI's to translate
    authorization = content_type = None
    for name, value in request.scope["headers"]:
        if name in declined:
            return None
        # The first of repeated headers, as Starlette's `Headers.get` reads them.
        if name == b"authorization":
            authorization = value if authorization is None else authorization
        elif name == b"content-type":
            content_type = value if content_type is None else content_type
    if authorization is None or content_type not in JSON_CONTENT_TYPES:
        return None
    # What fastapi.security.HTTPBearer and shared.auth.require accept, nothing more.
    kind, token = get_authorization_scheme_param(authorization.decode("latin-1"))
    if kind.lower() != "bearer" or not token:
        return None
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(token)
    if principal is None or scope not in principal.scopes:
        return None
    try:
        return await request.body()
    except HTTPException:
        raise
    except Exception as exc:
        # As FastAPI's handler answers a body it could not read (json_body_errors: a 422).
        raise HTTPException(400, detail="There was an error parsing the body") from exc
