"""HTTP pieces every service mounts: health, readiness, and error bodies without internals."""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shared.commit_outcome import outcome_unknown, track_commits
from shared.consumer_liveness import ConsumerLiveness
from shared.db import error_kind, is_unavailable

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


def health_router(
    checks: dict[str, ReadinessCheck],
    *,
    consumers: Callable[[], Sequence[ConsumerLiveness]] = list,
    stall_seconds: float = 120.0,
) -> APIRouter:
    """`/healthz`: the process is up. `/readyz`: every named dependency answers, and every
    Kafka consumer polled with success within `stall_seconds` (a stalled one is named, as
    check `consumer <name>`; each consumer's liveness is in `consumers`)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        responses={503: {"description": "a dependency is unreachable, or a consumer stalled"}},
    )
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                ok = await check()
            except Exception:
                ok = False
            results[name] = "ok" if ok else "unavailable"
        liveness: dict[str, dict[str, Any]] = {}
        for consumer in consumers():
            stalled = consumer.seconds_since_poll > stall_seconds
            results[f"consumer {consumer.name}"] = "stalled" if stalled else "ok"
            liveness[consumer.name] = {
                "seconds_since_poll": round(consumer.seconds_since_poll, 1),
                "stall_limit_seconds": stall_seconds,
                "partitions_assigned": consumer.partitions_assigned,
                "lag": consumer.lag,
            }
        ready = all(v == "ok" for v in results.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": results}
        if liveness:
            body["consumers"] = liveness
        return JSONResponse(
            body, status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
        )

    return router


# What a retry without an Idempotency-Key does after a COMMIT of unknown outcome, unless
# the app says better for its own endpoints (`app.state.retry_without_key`).
RETRY_WITHOUT_KEY = "Without a key, a retry may do it a second time."


def install_error_handlers(app: FastAPI) -> None:
    """A database outage answers 503 with Retry-After, never a 5xx stack trace or a false 202.

    The 503 says what was stored. A failure before COMMIT was sent stored nothing
    (`"outcome": "not_stored"`): retrying is safe. A connection lost while COMMIT was under
    way leaves the outcome unknown (`"outcome": "unknown"`): the request may have been
    stored, so a retry is safe with the same Idempotency-Key (it answers what was stored,
    or does the work once); what one without a key does depends on the endpoint.
    """
    track_commits()

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        if is_unavailable(exc):
            unknown = outcome_unknown(exc)
            log.warning(
                "database unavailable on %s %s%s: %s",
                request.method,
                request.url.path,
                " during COMMIT, outcome unknown" if unknown else "",
                type(exc).__name__,
            )
            if unknown:
                without_key = getattr(request.app.state, "retry_without_key", RETRY_WITHOUT_KEY)
                body = {
                    "detail": "the database connection was lost while the request was being "
                    "committed: whether it was stored is unknown. A retry with the same "
                    "Idempotency-Key is safe: it answers what was stored, or does the work "
                    f"once. {without_key}",
                    "outcome": "unknown",
                }
            else:
                body = {
                    "detail": "database unavailable, nothing was stored; retry later",
                    "outcome": "not_stored",
                }
            return JSONResponse(
                body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "2"}
            )
        # Its kind, never its text or traceback: PostgreSQL's text quotes the values
        # (`Key (email)=(…) already exists`).
        log.error("database error on %s %s: %s", request.method, request.url.path, error_kind(exc))
        return JSONResponse(
            {"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
        )

    for exc_type in (sa.exc.SQLAlchemyError, ConnectionError, OSError):
        app.add_exception_handler(exc_type, database_error)
    app.add_exception_handler(RequestValidationError, validation_failed)


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without echoing bodies back: a body may be a person's data, megabytes
    long, or text (an unpaired surrogate) that cannot even be encoded. A short query or
    path value is named in the message (`grain` 'year'), so the caller sees what was wrong."""
    assert isinstance(exc, RequestValidationError)
    detail = []
    for e in exc.errors():
        msg = e["msg"]
        value = e.get("input")
        named = e["loc"] and e["loc"][0] in ("query", "path") and isinstance(value, str)
        if named and len(value) <= 100 and value.isprintable():
            msg = f"{msg} (got {value!r})"
        detail.append({"loc": list(e["loc"]), "msg": msg, "type": e["type"]})
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


class BodyLimits:
    """The body size limit of each path. `limits` maps a path prefix to its limit; the
    longest matching prefix wins. A key with `*` is a glob matched against the whole path
    (`/v1/webinars/*/attendees:import`), for routes whose distinguishing part comes after a
    path parameter."""

    def __init__(self, limits: dict[str, int], default: int) -> None:
        self.limits = sorted(limits.items(), key=lambda kv: -len(kv[0]))
        self.default = default

    def for_path(self, path: str) -> int:
        for prefix, limit in self.limits:
            if fnmatch.fnmatchcase(path, prefix) if "*" in prefix else path.startswith(prefix):
                return limit
        return self.default


class BodySizeLimit:
    """Refuse bodies over a limit with 413 before the app reads them.

    Checks Content-Length up front and counts the bytes of chunked bodies as they
    arrive, so a client cannot stream past the limit by leaving the header out.
    """

    def __init__(self, app: Any, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, "invalid Content-Length header", 400)
                    return
                if declared > limit:
                    await _too_large(send, f"request body over the limit of {limit} bytes")
                    return
        received = 0
        refused = False

        async def counting_receive() -> Any:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise _BodyTooLarge
            return message

        response_started = False

        async def tracking_send(message: Any) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _too_large(send, f"request body over the limit of {limit} bytes")
        except Exception:
            if refused and not response_started:
                await _too_large(send, f"request body over the limit of {limit} bytes")
            else:
                raise


class SecurityHeaders:
    """Defaults every answer carries unless the endpoint set its own (the dashboard's CSP)."""

    DEFAULTS: tuple[tuple[bytes, bytes], ...] = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-resource-policy", b"same-origin"),
    )

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = self.added_to(message)
            await send(message)

        await self.app(scope, receive, with_headers)

    @classmethod
    def added_to(cls, start: Any) -> Any:
        """A response start message with the defaults its headers lack."""
        headers = list(start.get("headers", []))
        present = {name.lower() for name, _ in headers}
        headers += [(k, v) for k, v in cls.DEFAULTS if k not in present]
        return {**start, "headers": headers}


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Any, message: str, status_code: int = 413) -> None:
    body = json.dumps({"detail": problem_detail(["body"], message, "too_large")}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def problem(
    status_code: int,
    loc: Sequence[str | int],
    msg: str,
    type_: str = "value_error",
    headers: dict[str, str] | None = None,
) -> HTTPException:
    """A 4xx whose body names what is wrong, shaped like FastAPI's 422 whatever the status:
    `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, so a client reads every
    refusal the same way."""
    return HTTPException(status_code, detail=problem_detail(loc, msg, type_), headers=headers)


def problem_detail(
    loc: Sequence[str | int], msg: str, type_: str = "value_error"
) -> list[dict[str, Any]]:
    """The `detail` of a `problem`, for an answer built without HTTPException."""
    return [{"loc": list(loc), "msg": msg, "type": type_}]


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def unprocessable(loc: Sequence[str | int], msg: str) -> HTTPException:
    """`problem`'s most common case: a 422 naming the bad field."""
    return problem(status.HTTP_422_UNPROCESSABLE_CONTENT, loc, msg)
