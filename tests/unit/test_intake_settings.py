"""Intake settings: the Zoom secret in dev and production, and input text rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from pydantic import SecretStr, ValidationError

from services.intake.admin.schemas import WebinarConfigIn
from services.intake.config import DEV_ZOOM_SECRET_TOKEN, IntakeSettings
from services.intake.leads.schemas import LeadIn, _printable
from shared.auth import Scope
from shared.settings import CommonSettings, InsecureSettings, Mode, TokenSpec

REAL = TokenSpec(
    name="crm", token_sha256=hashlib.sha256(b"a-real-token").hexdigest(), scopes=[Scope.kpi_read]
)


# Production needs master keys for the lead keys (crypto-shredding): 32 bytes, base64url.
MASTERS = {"m1": SecretStr(base64.urlsafe_b64encode(bytes(range(32))).decode())}


def production(**kw: object) -> IntakeSettings:
    kw.setdefault("master_keys", MASTERS)
    return IntakeSettings(common=CommonSettings(mode=Mode.production, auth_tokens=[REAL]), **kw)  # type: ignore[arg-type]


class TestMasterKeys:
    def test_production_refuses_to_start_without_master_keys(self) -> None:
        with pytest.raises(InsecureSettings, match="LEADFLOW_INTAKE_MASTER_KEYS"):
            production(master_keys={}).check_secure()

    def test_production_refuses_an_unknown_current_master(self) -> None:
        with pytest.raises(ValueError, match="m2"):
            production(master_key_id="m2").check_secure()


class TestZoomSecret:
    def test_dev_mode_uses_the_documented_dev_secret(self) -> None:
        assert IntakeSettings().zoom_secret() == DEV_ZOOM_SECRET_TOKEN

    def test_production_refuses_the_dev_secret(self) -> None:
        settings = production(zoom_secret_token=SecretStr(DEV_ZOOM_SECRET_TOKEN))
        with pytest.raises(InsecureSettings, match="Zoom"):
            settings.check_secure()

    def test_production_without_a_secret_starts_with_zoom_off(self) -> None:
        settings = production()
        settings.check_secure()
        assert settings.zoom_secret() is None

    def test_production_with_a_real_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LEADFLOW_INTAKE_ZOOM_SECRET_TOKEN", "zoom-secret-from-the-app")
        settings = production()
        settings.check_secure()
        assert settings.zoom_secret() == "zoom-secret-from-the-app"


class TestText:
    @pytest.mark.parametrize("bad", ["Anna\x00", "An\x07na", "\ud800"])
    def test_control_characters_and_lone_surrogates_are_refused(self, bad: str) -> None:
        with pytest.raises(ValidationError) as err:
            LeadIn(name=bad, email="a@b.example", consent=True)
        assert err.value.errors()[0]["loc"] == ("name",)

    def test_exactly_the_control_characters_and_surrogates_are_refused(self) -> None:
        refused = {*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F}
        refused |= set(range(0xD800, 0xE000))
        for code in range(0x10000):
            try:
                _printable(f"a{chr(code)}b")
            except ValueError as exc:
                assert code in refused, hex(code)
                kind = "surrogate" if code >= 0xD800 else f"control character U+{code:04X}"
                assert kind in str(exc)
            else:
                assert code not in refused, hex(code)

    def test_tabs_new_lines_emoji_and_bidi_marks_are_text(self) -> None:
        text = "Line 1\n\tLine 2 😀 \u200fשלום"
        assert LeadIn(message=text, consent=True).message == text

    def test_webinar_config_checks_zone_and_zoom_id(self) -> None:
        config = WebinarConfigIn(
            consent_text_version="v1", zoom_webinar_id="812 3456 7890", timezone="Europe/Moscow"
        )
        assert config.zoom_webinar_id == "81234567890"
        with pytest.raises(ValidationError):
            WebinarConfigIn(consent_text_version="v1", timezone="Mars/Olympus")
        with pytest.raises(ValidationError):
            WebinarConfigIn(consent_text_version="v1", zoom_webinar_id="12ab")
