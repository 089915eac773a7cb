"""Kafka security settings: what every client gets, what production refuses, secrets kept
out of reprs and errors; durability defaults; dev mode binds loopback only."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from cli.kafka.tls import client_certificate, make_tls
from shared.auth import Scope
from shared.kafka_security import Durability, KafkaSettingsError, SecurityProtocol
from shared.settings import CommonSettings, InsecureSettings, Mode, ServiceSettings, TokenSpec
from shared.topics import TopicDurability, TopicsUnderReplicated, check_durability

PASSWORD = "pw-" + "5ecret" * 4
TOKEN = TokenSpec(
    name="bi", token_sha256=hashlib.sha256(b"a-real-token").hexdigest(), scopes=[Scope.kpi_read]
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    files = make_tls(tmp_path_factory.mktemp("tls"))
    cert, key = client_certificate(files, "intake")
    return files.ca_cert, cert, key


class Svc(ServiceSettings):
    """A service with no settings of its own: only what every service checks."""

    service_name = "svc"
    port: int = 8009


def production(**kafka: object) -> CommonSettings:
    kafka.setdefault("kafka_plaintext_allowed", False)
    return CommonSettings(mode=Mode.production, auth_tokens=[TOKEN], **kafka)  # type: ignore[arg-type]


class TestProductionRefusesCleartext:
    @pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
    def test_refused_with_the_way_out(self, protocol: str) -> None:
        settings = production(
            kafka_security_protocol=protocol, kafka_sasl_username="u", kafka_sasl_password=PASSWORD
        )
        with pytest.raises(InsecureSettings, match="LEADFLOW_KAFKA_PLAINTEXT_ALLOWED") as err:
            settings.check_secure()
        assert f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol}" in str(err.value)
        assert PASSWORD not in str(err.value)

    def test_allowed_for_a_private_network(self) -> None:
        production(kafka_plaintext_allowed=True).check_secure()

    def test_dev_mode_takes_plaintext(self) -> None:
        CommonSettings(kafka_plaintext_allowed=False).check_secure()

    def test_sasl_ssl_passes(self, tls: tuple[Path, Path, Path]) -> None:
        production(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="intake",
            kafka_sasl_password=PASSWORD,
            kafka_ssl_cafile=tls[0],
        ).check_secure()


class TestClients:
    def test_sasl_ssl_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tls: tuple[Path, Path, Path]
    ) -> None:
        for name, value in {
            "SECURITY_PROTOCOL": "SASL_SSL",
            "SASL_MECHANISM": "SCRAM-SHA-256",
            "SASL_USERNAME": "intake",
            "SASL_PASSWORD": PASSWORD,
            "SSL_CAFILE": str(tls[0]),
        }.items():
            monkeypatch.setenv(f"LEADFLOW_KAFKA_{name}", value)
        settings = Svc()
        kwargs = settings.common.kafka().client_kwargs()
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
        assert kwargs["sasl_plain_username"] == "intake"
        assert kwargs["sasl_plain_password"] == PASSWORD
        context: ssl.SSLContext = kwargs["ssl_context"]
        assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        # The password is in no repr of the settings or the connection.
        for shown in (repr(settings), str(settings), repr(settings.common.kafka())):
            assert PASSWORD not in shown

    def test_mutual_tls(self, tls: tuple[Path, Path, Path]) -> None:
        ca, cert, key = tls
        settings = CommonSettings(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=ca,
            kafka_ssl_certfile=cert,
            kafka_ssl_keyfile=key,
        )
        kwargs = settings.kafka().client_kwargs()
        assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
        assert kwargs["ssl_context"].check_hostname

    def test_empty_variables_are_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # docker-compose.yml passes `${LEADFLOW_KAFKA_SSL_CAFILE:-}` in dev.
        for name in ("SSL_CAFILE", "SASL_USERNAME", "SASL_PASSWORD"):
            monkeypatch.setenv(f"LEADFLOW_KAFKA_{name}", "")
        settings = CommonSettings()
        assert settings.kafka_ssl_cafile is None and settings.kafka_sasl_password is None
        settings.check_secure()

    def test_plaintext_gets_no_tls_and_no_sasl(self) -> None:
        kwargs = CommonSettings().kafka().client_kwargs()
        assert kwargs == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}

    @pytest.mark.parametrize(
        ("settings", "said"),
        [
            ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "PASSWORD"),
            ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/x.pem"}, "KEYFILE"),
            ({"kafka_ssl_cafile": "/etc/hostname"}, "does not use TLS"),
            ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nope.pem"}, "no file"),
        ],
    )
    def test_incomplete_settings_refuse_in_any_mode(
        self, settings: dict[str, str], said: str
    ) -> None:
        with pytest.raises(InsecureSettings, match=said):
            CommonSettings(**settings).check_secure()  # type: ignore[arg-type]

    def test_an_error_never_quotes_the_password(self) -> None:
        settings = CommonSettings(
            kafka_security_protocol=SecurityProtocol.SASL_SSL,
            kafka_sasl_password=SecretStr(PASSWORD),
            kafka_ssl_cafile=Path("/nope.pem"),
        )
        with pytest.raises(InsecureSettings) as err:
            settings.check_secure()
        assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)


class TestDurability:
    def test_defaults_by_mode(self) -> None:
        assert CommonSettings(
            kafka_replication_factor=None, kafka_min_insync_replicas=None
        ).durability() == Durability(1, 1, strict=False)
        assert production(
            kafka_replication_factor=None, kafka_min_insync_replicas=None
        ).durability() == Durability(3, 2, strict=True)

    def test_min_insync_above_replication_is_refused(self) -> None:
        settings = CommonSettings(kafka_replication_factor=2, kafka_min_insync_replicas=3)
        with pytest.raises(InsecureSettings, match="MIN_INSYNC_REPLICAS=3"):
            settings.check_secure()
        with pytest.raises(KafkaSettingsError):
            Durability(1, 0)

    def test_production_refuses_topics_below_the_setting(self) -> None:
        found = [TopicDurability("leads.received", 3, 2), TopicDurability("leads.routed", 1, 1)]
        with pytest.raises(TopicsUnderReplicated, match=r"leads\.routed: replication factor 1 < 3"):
            check_durability(found, Durability(3, 2, strict=True))
        check_durability(found[:1], Durability(3, 2, strict=True))

    def test_dev_warns_and_goes_on(self, caplog: pytest.LogCaptureFixture) -> None:
        check_durability([TopicDurability("leads.routed", 1, None)], Durability(2, 2))
        assert "min.insync.replicas could not be read" in caplog.text
        assert "dev mode: used anyway" in caplog.text


class TestDevBindsLoopback:
    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
    def test_refuses_other_addresses(self, host: str) -> None:
        settings = Svc(host=host, common=CommonSettings(dev_public_bind=False))
        with pytest.raises(InsecureSettings, match="LEADFLOW_DEV_PUBLIC_BIND"):
            settings.check_secure()

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
    def test_takes_loopback(self, host: str) -> None:
        Svc(host=host, common=CommonSettings(dev_public_bind=False)).check_secure()

    def test_unless_told(self) -> None:
        Svc(host="0.0.0.0", common=CommonSettings(dev_public_bind=True)).check_secure()

    def test_production_binds_where_told(self) -> None:
        Svc(host="0.0.0.0", common=production(kafka_plaintext_allowed=True)).check_secure()
