"""Settings: dev mode gives the dev token; production refuses to start on dev defaults."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from services.intake.config import IntakeSettings
from services.intake.hot_path.front import Front
from services.intake.main import create_app
from shared.auth import Authenticator, Scope
from shared.settings import CommonSettings, InsecureSettings, Mode, TokenSpec

REAL = TokenSpec(
    name="crm",
    token_sha256=hashlib.sha256(b"s3cret-token-of-the-crm").hexdigest(),
    scopes=[Scope.leads_write],
)


class TestProductionMode:
    def test_refuses_to_start_without_tokens(self) -> None:
        with pytest.raises(InsecureSettings, match="LEADFLOW_AUTH_TOKENS"):
            CommonSettings(mode=Mode.production).check_secure()

    def test_refuses_the_dev_token(self) -> None:
        dev = TokenSpec(
            name="x", token_sha256=hashlib.sha256(b"dev").hexdigest(), scopes=[Scope.kpi_read]
        )
        with pytest.raises(InsecureSettings, match="dev token"):
            CommonSettings(mode=Mode.production, auth_tokens=[dev]).check_secure()

    def test_starts_with_real_tokens_and_no_dev_token(self) -> None:
        settings = CommonSettings(mode=Mode.production, auth_tokens=[REAL])
        settings.check_secure()
        auth = Authenticator(settings.tokens())
        assert auth.authenticate("dev") is None
        principal = auth.authenticate("s3cret-token-of-the-crm")
        assert principal is not None and principal.scopes == {Scope.leads_write}

    def test_reads_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LEADFLOW_MODE", "production")
        monkeypatch.setenv("LEADFLOW_AUTH_TOKENS", f"[{REAL.model_dump_json()}]")
        monkeypatch.setenv("LEADFLOW_INTAKE_PORT", "9101")
        # Intake's production mode also needs master keys for the lead keys.
        monkeypatch.setenv("LEADFLOW_INTAKE_MASTER_KEYS", json.dumps({"m1": "A" * 43}))
        settings = IntakeSettings()
        settings.check_secure()
        assert settings.port == 9101
        assert settings.common.auth_tokens == [REAL]


class TestDevMode:
    def test_dev_token_holds_every_scope(self) -> None:
        principal = Authenticator(CommonSettings().tokens()).authenticate("dev")
        assert principal is not None and principal.scopes == set(Scope)

    def test_default_database_is_the_embedded_servers_in_the_data_dir(self, tmp_path: Path) -> None:
        settings = IntakeSettings(common=CommonSettings(data_dir=tmp_path))
        socket_dir = tmp_path / "postgres"
        assert settings.db_url == f"postgresql+asyncpg://leadflow@/intake?host={socket_dir}"

    def test_a_configured_database_replaces_the_embedded_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        external = "postgresql+asyncpg://crm:pw@db.internal:5432/leads"
        monkeypatch.setenv("LEADFLOW_INTAKE_DATABASE_URL", external)
        assert IntakeSettings(common=CommonSettings(data_dir=tmp_path)).db_url == external


LEAD_POST = {"type": "http", "method": "POST", "path": "/v1/leads", "headers": []}


class TestOpenTelemetry:
    """FastAPI's OpenTelemetry instrumentation runs only when asked for; the front (which
    answers ahead of that layer) then leaves requests to the stack, so each is traced."""

    @pytest.fixture(autouse=True)
    def configured_tracing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # As after an OpenTelemetry SDK's set-up: a real provider, not the API's proxy.
        monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)

    def _app(self, tmp_path: Path, **common: Any) -> Any:
        return create_app(IntakeSettings(common=CommonSettings(data_dir=tmp_path, **common)))

    def test_off_by_default_even_with_a_provider(self, tmp_path: Path) -> None:
        app = self._app(tmp_path)
        assert not app._native_telemetry.enabled()
        assert Front._takes(app, LEAD_POST, 65_536)

    def test_on_when_asked(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LEADFLOW_OPENTELEMETRY", "true")
        assert CommonSettings().opentelemetry
        app = self._app(tmp_path, opentelemetry=True)
        assert app._native_telemetry.enabled()
        assert not Front._takes(app, LEAD_POST, 65_536)
