"""KPI settings (env prefix `LEADFLOW_KPI_`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class KpiSettings(ServiceSettings):
    service_name: ClassVar[str] = "kpi"
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_KPI_", extra="ignore")

    port: int = 8003
    consumer_max_records: int = 2000
    max_range_days: int = 3 * 366
