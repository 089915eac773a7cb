"""What the KPI's endpoints share: the app's runtime and settings, who may call, a read's
snapshot, and the query parameters reads and listings both take."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kpi.config import KpiSettings
from shared.auth import Principal, Scope, require
from shared.runtime import Runtime
from shared.web import unprocessable

KpiReader = Annotated[Principal, Depends(require(Scope.kpi_read))]
KpiWriter = Annotated[Principal, Depends(require(Scope.kpi_write))]
Admin = Annotated[Principal, Depends(require(Scope.definitions_admin))]

FormatQ = Annotated[
    Literal["json", "csv"] | None,
    Query(description="`json` (default) or `csv`; `Accept: text/csv` works too"),
]
ChannelQ = Annotated[str | None, Query(description="utm source (`direct` when absent)")]
CampaignQ = Annotated[str | None, Query(description="utm campaign (`none` when absent)")]


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def settings_of(request: Request) -> KpiSettings:
    settings: KpiSettings = request.app.state.settings
    return settings


@contextlib.asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read that sees one snapshot, so value, previous and year ago agree with each other."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        yield conn


def reject_unknown(request: Request, allowed: frozenset[str]) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise unprocessable(
                ["query", name],
                f"unknown query parameter {name!r}; expected one of {', '.join(sorted(allowed))}",
            )
