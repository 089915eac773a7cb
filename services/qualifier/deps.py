"""What the qualifier's routers share: who may call, the app's runtime and settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from services.qualifier.config import QualifierSettings
from shared.auth import Principal, Scope, require
from shared.runtime import Runtime

Reader = Annotated[Principal, Depends(require(Scope.leads_read))]
SalesTool = Annotated[Principal, Depends(require(Scope.leads_write))]
Admin = Annotated[Principal, Depends(require(Scope.definitions_admin))]


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def settings(request: Request) -> QualifierSettings:
    s: QualifierSettings = request.app.state.settings
    return s


Settings = Annotated[QualifierSettings, Depends(settings)]


def conflict(message: str, **extra: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail={"msg": message, **extra})
