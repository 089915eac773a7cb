"""A service app's front: its hottest request answered without the middleware stack.

Under load, walking the stack (Starlette's error layer, FastAPI's telemetry and body-limit
layers, our body limit, security headers and metrics, exception handling, then a router
trying route after route) cost intake more CPU per lead than its route's own work. A
`ServiceApp` offers a request whose method and path have a front handler to that handler
first, with the body read in advance under the body limit. The handler answers the
request or declines (None) having done nothing anyone can see; a declined request, or one
the front does not take at all, goes down the stack as always, the body bytes read handed
back to it. An answer gets what the stack adds to every answer (the security headers,
the request metrics); an exception is the stack's to answer: the request goes down the
stack with it, and its route raises it again (`raise_front_failure`), so the client gets
what it would have got had the route raised it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from starlette.types import Message, Receive, Scope, Send

from shared.observability import HttpMetrics
from shared.web import BodyLimits, SecurityHeaders


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """A JSON answer a front handler gives: the front sends it as two ASGI messages with
    headers made ahead (a Starlette Response and the security-header wrapper around its
    send cost more than the rest of the answer); `response()` is the same for the stack."""

    status: int
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type="application/json")


# What a JsonAnswer carries besides its length: what Response and SecurityHeaders add.
_JSON_HEADERS = ((b"content-type", b"application/json"), *SecurityHeaders.DEFAULTS)

FrontHandler = Callable[[Request], Awaitable[JsonAnswer | Response | None]]

_FAILURE = "leadflow.front.failure"


def raise_front_failure(request: Request) -> None:
    """In the route: raise what its front handler raised, if it did (see the module)."""
    failure = request.scope.pop(_FAILURE, None)
    if failure is not None:
        raise failure


class Front:
    def __init__(
        self,
        handlers: dict[tuple[str, str], FrontHandler],
        *,
        limits: BodyLimits,
        metrics: HttpMetrics,
    ) -> None:
        self.handlers = handlers
        # Each front path's body limit, looked up once (a limit may be a glob).
        self._limits = {path: limits.for_path(path) for _, path in handlers}
        self._metrics = metrics

    async def serve(
        self, app: FastAPI, handler: FrontHandler, scope: Scope, receive: Receive, send: Send
    ) -> Receive | None:
        """Answer the request with `handler` (None); when it declines, having sent nothing,
        the `receive` to take the request down the stack with."""
        limit = self._limits[scope["path"]]
        if not self._takes(app, scope, limit):
            return receive
        start = time.perf_counter()
        messages, body = await _read_body(receive, limit)
        replayed = _replay(messages, receive)
        if body is None:
            return replayed  # too long, or the client left: the stack answers that
        scope["app"] = app
        request = Request(scope, _whole(body, receive))
        # Starlette's `Request.body()` keeps what it read in `_body`: set, the handler's
        # read returns the bytes in hand instead of taking them through `receive` again.
        request._body = body
        try:
            response = await handler(request)
        except Exception as exc:
            scope[_FAILURE] = exc
            return replayed
        if response is None:
            return replayed
        if isinstance(response, JsonAnswer):
            try:
                headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(response.body))]
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": response.body})
            finally:
                self._metrics.observe(scope["method"], scope["path"], response.status, start)
            return None
        status = 500

        async def with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = SecurityHeaders.added_to(message)
            await send(message)

        try:
            await response(scope, request.receive, with_headers)
        finally:
            self._metrics.observe(scope["method"], scope["path"], status, start)
        return None

    @staticmethod
    def _takes(app: FastAPI, scope: Scope, limit: int) -> bool:
        """Only a request the stack would hand to the route as it came: no root path, no
        Origin (CORS), no dependency overrides (tests'), no OpenTelemetry or FastAPI body
        limit (layers of the stack the front would skip), a Content-Length in the limit."""
        if scope.get("root_path") or app.root_path or app.dependency_overrides:
            return False
        if app.max_body_size is not None:
            return False
        telemetry = getattr(app, "_native_telemetry", None)
        if telemetry is not None and telemetry.enabled():
            return False
        for name, value in scope["headers"]:
            if name == b"origin":
                return False
            if name == b"content-length" and not (value.isdigit() and int(value) <= limit):
                return False
        return True


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The messages read, and the body: None past the limit or when the client left."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        received += len(chunk)
        if received > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive`, with `messages` (already taken from it) first."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _whole(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then what `receive` has next (a disconnect)."""
    sent = False

    async def whole() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return whole


class ServiceApp(FastAPI):
    """A service's FastAPI app, with a front for its hottest requests (`front`)."""

    front: Front | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and scope["type"] == "http":
            handler = front.handlers.get((scope["method"], scope["path"]))
            if handler is not None:
                declined = await front.serve(self, handler, scope, receive, send)
                if declined is None:
                    return
                receive = declined
        await super().__call__(scope, receive, send)


def install_front(app: FastAPI, handlers: dict[tuple[str, str], FrontHandler]) -> None:
    """Give an app made by `create_service_app(app_class=ServiceApp)` its front: `handlers`
    by (method, path), under the app's body limits, counted in its request metrics."""
    if not isinstance(app, ServiceApp):
        raise TypeError("a front needs create_service_app(..., app_class=ServiceApp)")
    service: str = app.state.settings.service_name
    app.front = Front(handlers, limits=app.state.body_limits, metrics=HttpMetrics(service))
