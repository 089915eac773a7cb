"""A stand-in for Leadflow's notification endpoint: records what the simulator sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response


@dataclass
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each delivery with the next of `statuses` (then 204) and keeps it."""

    statuses: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)

    def app(self) -> Any:
        app = FastAPI()

        @app.post("/hooks/hubspot")
        async def hook(request: Request) -> Response:
            self.got.append(
                Received(
                    request.method, str(request.url), dict(request.headers), await request.body()
                )
            )
            return Response(status_code=self.statuses.pop(0) if self.statuses else 204)

        return app
