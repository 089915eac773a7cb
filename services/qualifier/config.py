"""Qualifier settings (env prefix `LEADFLOW_QUALIFIER_`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEFAULT_DEFINITION = Path(__file__).with_name("default_definition.yaml")


class QualifierSettings(ServiceSettings):
    service_name: ClassVar[str] = "qualifier"
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_QUALIFIER_", extra="ignore")

    port: int = 8002
    # Published as version 1 when the database holds no definition yet.
    initial_definition: Path = DEFAULT_DEFINITION
    relay_batch_size: int = 500
    relay_poll_seconds: float = 1.0
