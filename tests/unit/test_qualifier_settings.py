"""Qualifier settings: partner secrets and the test fault are safe in production."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from services.qualifier.config import QualifierSettings
from shared.auth import Scope
from shared.settings import CommonSettings, InsecureSettings, Mode, TokenSpec

TOKEN = TokenSpec(
    name="crm", token_sha256=hashlib.sha256(b"a-real-token").hexdigest(), scopes=[Scope.leads_write]
)
PRODUCTION = CommonSettings(mode=Mode.production, auth_tokens=[TOKEN])
# Production needs a token for intake's key store (crypto-shredding).
KEYS = SecretStr("a-real-keys-token")


class TestProduction:
    @pytest.mark.parametrize("token", [None, "dev"])
    def test_refuses_no_or_the_dev_keys_token(self, token: str | None) -> None:
        keys = SecretStr(token) if token is not None else None
        settings = QualifierSettings(common=PRODUCTION, keys_token=keys)
        with pytest.raises(InsecureSettings, match="LEADFLOW_QUALIFIER_KEYS_TOKEN"):
            settings.check_secure()

    def test_refuses_the_kill_fault(self) -> None:
        settings = QualifierSettings(common=PRODUCTION, keys_token=KEYS, fault_kill_after_commit=1)
        with pytest.raises(InsecureSettings, match="FAULT_KILL_AFTER_COMMIT"):
            settings.check_secure()

    @pytest.mark.parametrize("secret", ["dev", "short"])
    def test_refuses_weak_partner_secrets(self, secret: str) -> None:
        settings = QualifierSettings(
            common=PRODUCTION, keys_token=KEYS, partner_secrets={"webstudio": secret}
        )
        with pytest.raises(InsecureSettings, match="webstudio"):
            settings.check_secure()

    def test_a_partner_without_a_secret_gets_none_and_is_never_signed_with_dev(self) -> None:
        settings = QualifierSettings(common=PRODUCTION, keys_token=KEYS)
        settings.check_secure()
        assert settings.partner_secret("webstudio") is None

    def test_reads_secrets_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "LEADFLOW_QUALIFIER_PARTNER_SECRETS", '{"webstudio": "0123456789abcdef0123"}'
        )
        settings = QualifierSettings(common=PRODUCTION, keys_token=KEYS)
        settings.check_secure()
        assert settings.partner_secret("webstudio") == "0123456789abcdef0123"
        assert "0123456789abcdef0123" not in repr(settings)


class TestDev:
    def test_unconfigured_partners_are_signed_with_the_dev_secret(self) -> None:
        settings = QualifierSettings(common=CommonSettings())
        assert settings.partner_secret("anyone") == "dev"

    def test_the_currency_is_three_capitals(self) -> None:
        with pytest.raises(ValueError):
            QualifierSettings(common=CommonSettings(), currency="rub")
