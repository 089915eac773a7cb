"""How every Kafka client of Leadflow connects (`KafkaConnection`: bootstrap servers, the
security protocol, SASL and TLS) and how durable its topics must be (`Durability`).

Producers, consumers and admin clients all take their keyword arguments from
`client_kwargs`, so no client can be made without the security settings. Passwords are
`SecretStr`: they show as `**********` in a repr, a log line or an error, and are read out
only into aiokafka's keyword arguments.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import SecretStr


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    PLAIN = "PLAIN"


# Without TLS, whoever reaches a broker reads every lead and can inject events.
CLEARTEXT = (SecurityProtocol.PLAINTEXT, SecurityProtocol.SASL_PLAINTEXT)


class KafkaSettingsError(ValueError):
    """The Kafka connection settings are incomplete or contradict each other."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where Kafka is and how to authenticate to it; `client_kwargs()` for aiokafka."""

    bootstrap_servers: str
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The CA that signed the brokers' certificates (PEM); unset: the system's CAs.
    ssl_cafile: Path | None = None
    # A client certificate and its key (PEM) for brokers that require mTLS.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None

    def __post_init__(self) -> None:
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise KafkaSettingsError(
                f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "LEADFLOW_KAFKA_SASL_USERNAME and LEADFLOW_KAFKA_SASL_PASSWORD"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise KafkaSettingsError(
                "a client certificate needs its key: set both LEADFLOW_KAFKA_SSL_CERTFILE "
                "and LEADFLOW_KAFKA_SSL_KEYFILE, or neither"
            )
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.tls and any(f is not None for f in tls_files):
            raise KafkaSettingsError(
                f"TLS files are set but LEADFLOW_KAFKA_SECURITY_PROTOCOL={self.security_protocol} "
                "does not use TLS (SSL or SASL_SSL)"
            )
        for name, path in zip(("CAFILE", "CERTFILE", "KEYFILE"), tls_files, strict=True):
            if path is not None and not Path(path).is_file():
                raise KafkaSettingsError(f"LEADFLOW_KAFKA_SSL_{name}: no file at {path}")

    @property
    def tls(self) -> bool:
        return self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def sasl(self) -> bool:
        return self.security_protocol in (
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Certificates verified against the CA, and the broker's name checked against its
        certificate (aiokafka's helper turns hostname checking on and will not turn it off)."""
        from aiokafka.helpers import create_ssl_context

        password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
        context = create_ssl_context(
            cafile=self.ssl_cafile,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            password=password,
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of AIOKafkaProducer, AIOKafkaConsumer and
        AIOKafkaAdminClient that say where Kafka is and how to authenticate."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol.value,
        }
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl:
            assert self.sasl_password is not None  # __post_init__
            kwargs["sasl_mechanism"] = self.sasl_mechanism.value
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs


# What the clients take: a connection, or bootstrap servers alone (PLAINTEXT, tests).
Kafka = KafkaConnection | str


def connection(kafka: Kafka) -> KafkaConnection:
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(kafka)


def client_kwargs(kafka: Kafka) -> dict[str, Any]:
    return connection(kafka).client_kwargs()


@dataclass(frozen=True)
class Durability:
    """The replication the lead topics must have. `strict` (production): topics below it
    are refused; otherwise (dev) a warning says so and they are used."""

    replication_factor: int = 1
    min_insync_replicas: int = 1
    strict: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise KafkaSettingsError(
                f"LEADFLOW_KAFKA_MIN_INSYNC_REPLICAS={self.min_insync_replicas} must be between "
                f"1 and LEADFLOW_KAFKA_REPLICATION_FACTOR={self.replication_factor}"
            )
