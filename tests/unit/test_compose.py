"""docker-compose.yml cannot run here (no Docker engine); this checks it against the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.intake.config import IntakeSettings
from services.kpi.config import KpiSettings
from services.qualifier.config import QualifierSettings
from shared.settings import CommonSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, type[ServiceSettings]] = {
    "intake": IntakeSettings,
    "qualifier": QualifierSettings,
    "kpi": KpiSettings,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def _known_env_names() -> set[str]:
    names = {f"LEADFLOW_{f.upper()}" for f in CommonSettings.model_fields}
    for cls in SETTINGS.values():
        prefix = cls.model_config.get("env_prefix", "")
        names |= {f"{prefix}{f}".upper() for f in cls.model_fields if f != "common"}
    return names


def test_every_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = _known_env_names()
    for name in ("migrate", *SETTINGS):
        env = compose["services"][name]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{name}: {unknown} are read by no settings class"


@pytest.mark.parametrize("service", list(SETTINGS))
def test_each_service_listens_on_its_contract_port(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    default_port = SETTINGS[service].model_fields["port"].default
    prefix = SETTINGS[service].model_config.get("env_prefix", "")
    assert svc["environment"][f"{prefix}PORT"] == str(default_port)
    # Published on the host's loopback only (dev mode's token `dev` holds every scope).
    assert svc["ports"] == [f"127.0.0.1:{default_port}:{default_port}"]
    assert svc["command"] == ["serve", service]
    assert f"{default_port}/readyz" in " ".join(svc["healthcheck"]["test"])
    assert svc["environment"][f"{prefix}DATABASE_URL"].endswith(f"/{service}")
    conditions = {k: v["condition"] for k, v in svc["depends_on"].items()}
    assert conditions == {
        # One of the two brokers, whichever profile runs (`required: false` for both).
        "kafka": "service_healthy",
        "kafka-secure-init": "service_completed_successfully",
        "postgres": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert svc["depends_on"]["kafka"]["required"] is False
    assert svc["depends_on"]["kafka-secure-init"]["required"] is False


def test_kafka_is_published_nowhere_and_production_runs_sasl_ssl(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "ports" not in services["kafka"] and "ports" not in services["kafka-secure"]
    assert services["kafka"]["profiles"] == ["dev"]
    assert services["kafka-secure"]["profiles"] == ["production"]
    listeners = services["kafka-secure"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert listeners.startswith("SASL_SSL://")
    assert "PLAINTEXT" not in listeners


def test_databases_and_kafka_match(compose: dict[str, Any]) -> None:
    init = (ROOT / "deploy/postgres/init-databases.sql").read_text()
    for service in SETTINGS:
        assert f"CREATE DATABASE {service};" in init
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert compose["services"]["migrate"]["command"] == ["migrate"]
