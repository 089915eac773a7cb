"""The practical limit: a trivial FastAPI endpoint served exactly like the services."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, status


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/leads", status_code=status.HTTP_202_ACCEPTED)
    async def accept(body: dict[str, Any]) -> dict[str, str]:
        return {"lead_id": "trivial", "status": "accepted"}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app
