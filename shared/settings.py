"""Settings every service shares (run mode, data dir, Kafka, tokens) and the service base class.

Each service has one Settings class with its own env prefix (`LEADFLOW_INTAKE_`...);
what all three share is read once here under `LEADFLOW_`. Nothing else reads os.environ.
"""

from __future__ import annotations

import hashlib
import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cli.postgres_server import ServerConfig
from shared.auth import ALL_SCOPES, Scope
from shared.kafka_security import (
    CLEARTEXT,
    Durability,
    KafkaConnection,
    KafkaSettingsError,
    SaslMechanism,
    SecurityProtocol,
)

DEV_TOKEN = "dev"


class Mode(StrEnum):
    dev = "dev"
    production = "production"


class TokenSpec(BaseModel):
    """One API client: a name for the logs, the SHA-256 of its token, and its scopes."""

    name: str
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope]


class InsecureSettings(ValueError):
    """Production mode refuses to start on dev defaults."""


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", extra="ignore")

    mode: Mode = Mode.dev
    data_dir: Path = Path("var")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # How every Kafka client connects (shared.kafka_security); docs/kafka.md step by step.
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # Production refuses PLAINTEXT and SASL_PLAINTEXT unless Kafka is on a private network
    # that only Leadflow reaches, and whoever deploys says so here.
    kafka_plaintext_allowed: bool = False
    # Replication of the topics the services create, and what existing topics must have:
    # unset, 3 and 2 in production, 1 and 1 in dev (one broker).
    kafka_replication_factor: int | None = Field(default=None, ge=1, le=32)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1, le=32)
    # Dev mode binds loopback only, since the token `dev` holds every scope; a container
    # (docker-compose.yml, which publishes the ports on the host's loopback) says so here.
    dev_public_bind: bool = False
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    # JSON list of {"name", "token_sha256", "scopes"}; hashes, so the env never holds a token.
    auth_tokens: list[TokenSpec] = Field(default_factory=list)
    log_level: str = "INFO"
    # Serve /docs and /openapi.json; production deployments may switch them off.
    docs_enabled: bool = True
    # Browser origins allowed to call the JSON APIs (CORS); none by default.
    cors_origins: list[str] = Field(default_factory=list)
    # FastAPI's own OpenTelemetry instrumentation: traces, metrics and logs to the providers
    # the process configures (an OpenTelemetry distro or SDK set-up). Off by default: the
    # services' metrics are Prometheus at /metrics, and while it is on every request first
    # asks OpenTelemetry for its three providers (about 5 µs, 1.5% of intake's CPU a lead).
    opentelemetry: bool = False
    # A consumer that has not polled with success (found nothing new, or applied what it
    # fetched) for this long makes /readyz answer 503, naming it: it is stuck, e.g. retrying
    # a batch through a database outage. Keep it above the batch timeout.
    consumer_stall_seconds: float = Field(default=120.0, gt=0)
    # A consumer batch the handler has not applied in this long is given up (rolled back);
    # its events are applied one at a time with the same bound, and one that alone outlasts
    # it is parked on the dead-letter topic, so one event cannot hang the consumer group.
    consumer_batch_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator(
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_ssl_key_password",
        mode="before",
    )
    @classmethod
    def _unset_when_empty(cls, v: object) -> object:
        # An empty variable (compose's `${X:-}`) means unset, not the file ".".
        return None if v == "" else v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def dev(self) -> bool:
        return self.mode is Mode.dev

    def tokens(self) -> list[TokenSpec]:
        """Configured tokens, plus `dev` with every scope in dev mode."""
        tokens = list(self.auth_tokens)
        if self.dev:
            dev_hash = hashlib.sha256(DEV_TOKEN.encode()).hexdigest()
            tokens.append(TokenSpec(name="dev", token_sha256=dev_hash, scopes=list(ALL_SCOPES)))
        return tokens

    def kafka(self) -> KafkaConnection:
        """How this process's Kafka clients connect; raises KafkaSettingsError when the
        settings are incomplete (SASL without a password, a certificate without its key)."""
        return KafkaConnection(
            bootstrap_servers=self.kafka_bootstrap_servers,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
        )

    def durability(self) -> Durability:
        """What the lead topics must have: enforced in production, warned about in dev."""
        return Durability(
            replication_factor=self.kafka_replication_factor or (1 if self.dev else 3),
            min_insync_replicas=self.kafka_min_insync_replicas or (1 if self.dev else 2),
            strict=not self.dev,
        )

    def check_secure(self) -> None:
        """Raise unless production mode has real secrets and encrypted Kafka; dev mode
        checks only that the Kafka settings are complete."""
        try:
            kafka = self.kafka()
            self.durability()
        except KafkaSettingsError as exc:
            raise InsecureSettings(str(exc)) from None
        if self.dev:
            return
        if kafka.security_protocol in CLEARTEXT and not self.kafka_plaintext_allowed:
            raise InsecureSettings(
                f"production mode refuses LEADFLOW_KAFKA_SECURITY_PROTOCOL="
                f"{kafka.security_protocol}: whoever reaches the brokers reads every lead and "
                "can inject events. Use SASL_SSL (or SSL), see docs/kafka.md; only if Kafka is "
                "on a private network that nothing else reaches, set "
                "LEADFLOW_KAFKA_PLAINTEXT_ALLOWED=true"
            )
        if not self.auth_tokens:
            raise InsecureSettings(
                "production mode needs LEADFLOW_AUTH_TOKENS "
                "(a JSON list of name, token_sha256, scopes)"
            )
        dev_hash = hashlib.sha256(DEV_TOKEN.encode()).hexdigest()
        if any(t.token_sha256 == dev_hash for t in self.auth_tokens):
            raise InsecureSettings("production mode refuses the dev token in LEADFLOW_AUTH_TOKENS")


class ServiceSettings(BaseSettings):
    """Base of each service's Settings: where it listens and which database it owns."""

    service_name: ClassVar[str]
    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int
    # Any PostgreSQL (postgresql+asyncpg://...); unset: the embedded server's database.
    database_url: str | None = None
    # Replicas of a service share this Kafka consumer group (default `leadflow-<service>`).
    consumer_group: str | None = None
    common: CommonSettings = Field(default_factory=CommonSettings)

    @property
    def db_url(self) -> str:
        """The configured URL, else this service's database on the embedded PostgreSQL
        server of the data dir (`leadflow up` or `leadflow postgres start` runs it)."""
        if self.database_url:
            return self.database_url
        return ServerConfig(data_dir=self.common.data_dir).url(self.service_name)

    @property
    def group_id(self) -> str:
        return self.consumer_group or f"leadflow-{self.service_name}"

    def check_secure(self) -> None:
        """Services with secrets of their own extend this."""
        self.common.check_secure()
        if self.common.dev and not self.common.dev_public_bind and not _loopback(self.host):
            raise InsecureSettings(
                f"dev mode binds loopback only (the token `dev` holds every scope), not "
                f"{self.host!r}: set LEADFLOW_MODE=production with real tokens, or "
                "LEADFLOW_DEV_PUBLIC_BIND=true where only you reach it (a container whose "
                "port is published on the host's loopback)"
            )


def _loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost` (names are not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
