"""What the intake endpoints depend on, as `Annotated` aliases: runtime, settings, callers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.intake.config import IntakeSettings
from services.intake.sources.ratelimit import RateLimiter
from shared.auth import Principal, Scope, require
from shared.runtime import Runtime


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


class FormLimits:
    """The public form endpoint's token buckets (per process): per client IP and per form."""

    def __init__(self, settings: IntakeSettings) -> None:
        self.per_ip = RateLimiter(
            per_minute=settings.form_ip_rate_per_minute, burst=settings.form_ip_burst
        )
        self.per_form = RateLimiter(
            per_minute=settings.form_rate_per_minute, burst=settings.form_burst
        )


async def _form_limits(request: Request) -> FormLimits:
    limits: FormLimits = request.app.state.form_limits
    return limits


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
SettingsDep = Annotated[IntakeSettings, Depends(_settings)]
FormLimitsDep = Annotated[FormLimits, Depends(_form_limits)]
Writer = Annotated[Principal, Depends(require(Scope.intake_write))]
Reader = Annotated[Principal, Depends(require(Scope.leads_read))]
Admin = Annotated[Principal, Depends(require(Scope.definitions_admin))]
