"""Logging set-up and Prometheus metrics for HTTP requests."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "leadflow_http_requests_total",
    "HTTP requests answered",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "leadflow_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def configure_logging(service: str, level: str = "INFO") -> None:
    """One line per record, naming the service; idempotent."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    fmt = f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"
    if not any(getattr(h, "_leadflow", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._leadflow = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    # aiokafka logs every reconnect attempt at ERROR; a warning is what they are.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    # httpx logs each request with the answer's reason phrase (INFO), httpcore its headers
    # (DEBUG): a remote's own words, which could be anything (a partner's, a person's
    # e-mail). What a service sends logs the status and outcome itself.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class Series:
    """A labelled metric's children, each looked up once: `labels()` joins and checks its
    values under a lock on every call, a few microseconds on every request or lead."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class HttpMetrics:
    """Count and time a service's requests, labelled by route template (never the raw
    path: lead ids would explode the number of series)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._requests = Series(HTTP_REQUESTS)
        self._latency = Series(HTTP_LATENCY)

    def observe(self, method: str, route: str, status: int, start: float) -> None:
        """A request answered `status`, begun at `start` (`time.perf_counter`)."""
        self._requests(self.service, method, route, str(status)).inc()
        self._latency(self.service, method, route).observe(time.perf_counter() - start)


class _HttpMetrics:
    """Pure ASGI middleware: `HttpMetrics` of every request."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.metrics = HttpMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, start)


def instrument(app: FastAPI, service: str) -> None:
    """Count and time every request; serve `GET /metrics`."""
    app.add_middleware(_HttpMetrics, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
