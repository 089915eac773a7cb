"""Intake settings (env prefix `LEADFLOW_INTAKE_`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_INTAKE_", extra="ignore")

    port: int = 8001
    # The same person from the same source and form within this window is a duplicate.
    dedupe_window_hours: float = Field(default=24.0, ge=0)
    idempotency_ttl_hours: float = Field(default=48.0, ge=24)
    default_phone_region: str = "RU"
    max_json_bytes: int = 64 * 1024
    relay_batch_size: int = 500
    relay_poll_seconds: float = 1.0
