"""Error answers of the intake API: each 4xx names what is wrong, shaped like FastAPI's 422.

`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, whatever the status, so a client
reads every refusal the same way.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.web import problem

Loc = Sequence[str | int]


def error_items(exc: ValidationError, prefix: Loc = ()) -> list[dict[str, Any]]:
    """Pydantic's errors as detail items under `prefix` (without echoing the input back)."""
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def invalid(exc: ValidationError, prefix: Loc = ("body",)) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=error_items(exc, prefix))


def describe(items: Sequence[dict[str, Any]]) -> str:
    """Detail items as one line for a CSV row's rejection: `email: not a valid ...; phone: ...`."""
    return "; ".join(f"{'.'.join(str(p) for p in i['loc']) or 'row'}: {i['msg']}" for i in items)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def json_body_errors(handler: Handler) -> Handler:
    """`handler` answering as a JSON route does: a body of another content type answers 415
    (after the token is checked: nobody learns more than 401 without one), and bodies the
    JSON parser chokes on (nested thousands deep, not UTF-8) answer 422 with the usual
    detail list instead of FastAPI's bare 400."""

    async def checked(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestValidationError:
            # FastAPI hands a non-JSON body over as bytes, which then fails validation.
            if await request.body() and not _is_json(request.headers.get("content-type")):
                raise problem(
                    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                    ["header", "Content-Type"],
                    "send the body as application/json",
                    "unsupported_media_type",
                ) from None
            raise
        except StarletteHTTPException as exc:  # FastAPI raises Starlette's own here
            if exc.status_code != status.HTTP_400_BAD_REQUEST or isinstance(exc.detail, list):
                raise
            cause = exc.__cause__
            if isinstance(cause, RecursionError):
                msg, kind = "the JSON is nested too deeply", "json_too_deep"
            elif isinstance(cause, UnicodeDecodeError):
                msg, kind = "the body is not UTF-8", "json_invalid"
            else:
                msg, kind = "the body could not be read as JSON", "json_invalid"
            raise problem(status.HTTP_422_UNPROCESSABLE_CONTENT, ["body"], msg, kind) from exc

    return checked


class JsonBodyRoute(APIRoute):
    """A route whose body is JSON, its refusals shaped by `json_body_errors`."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        return handler if self.body_field is None else json_body_errors(handler)
