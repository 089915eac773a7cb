"""Qualifier settings (env prefix `LEADFLOW_QUALIFIER_`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_TOKEN, InsecureSettings, ServiceSettings

DEFAULT_DEFINITION = Path(__file__).with_name("default_definition.yaml")
# Dev mode signs webhooks of partners without a configured secret with this one (and says
# so at start-up); production mode refuses it.
DEV_PARTNER_SECRET = "dev"
MIN_PARTNER_SECRET_LENGTH = 16


class QualifierSettings(ServiceSettings):
    service_name: ClassVar[str] = "qualifier"
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_QUALIFIER_", extra="ignore")

    port: int = 8002
    # Published as version 1 when the database holds no definition yet.
    initial_definition: Path = DEFAULT_DEFINITION
    # What the process holds at once while it works off a backlog: a relay batch's sealed
    # payloads, a consumer batch and its fetch's response. At 500, 500 and 1 MB a partition
    # the qualifier peaked at 157-163 MB after the bench's burst (docs/benchmarks.md,
    # round 11); at steady rates the batches are far smaller anyway.
    relay_batch_size: int = Field(default=100, ge=1)
    relay_poll_seconds: float = 1.0
    consumer_max_records: int = Field(default=100, ge=1)
    consumer_fetch_max_partition_bytes: int = Field(default=256 * 1024, ge=1024)

    # Lifecycle calls.
    # The deployment's one currency: payments in another are refused (KPI sums one currency).
    currency: str = Field(default="RUB", pattern=r"^[A-Z]{3}$")
    # How far ahead of our clock a client's `at` may be before it counts as "in the future".
    clock_skew_seconds: float = Field(default=300, ge=0)
    # How long an Idempotency-Key answers the same response (at least a day of retries).
    idempotency_ttl_hours: int = Field(default=48, ge=24)
    # How long a call's claim on its key blocks retries (409) if the call never finishes.
    idempotency_lock_seconds: float = Field(default=60.0, gt=0)

    # Definitions: a larger upload answers 413 (the bundled example is under 3 KB).
    definition_max_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    # Back-tests: a longer range, or one holding more leads, answers 422; so does a run
    # that has not finished when its time is up (it holds a connection and a CPU).
    backtest_max_days: int = Field(default=366, ge=1)
    backtest_max_leads: int = Field(default=100_000, ge=1)
    backtest_budget_seconds: float = Field(default=30, gt=0)
    # Suggested edits (POST /v1/definitions/{v}/suggest), bounded like back-tests: no
    # suggestion from fewer older outcomes than this; a criterion needs this many leads on
    # each side; this share of the newest outcomes is held out to judge the suggestion;
    # the threshold sends to sales the leads at least this likely to be accepted.
    suggest_min_outcomes: int = Field(default=300, ge=20)
    suggest_min_support: int = Field(default=30, ge=5)
    suggest_held_out_share: float = Field(default=0.3, gt=0, lt=1)
    suggest_sales_min_acceptance: float = Field(default=0.5, gt=0, lt=1)

    # SLA watch: how often overdue sales leads are looked for.
    sla_check_seconds: float = Field(default=30, gt=0)

    # Partner webhooks. JSON map of partner id to its HMAC secret.
    partner_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    partner_timeout_seconds: float = Field(default=10, gt=0)
    partner_max_attempts: int = Field(default=8, ge=1)
    partner_retry_base_seconds: float = Field(default=5, gt=0)
    partner_retry_max_seconds: float = Field(default=3600, gt=0)
    partner_poll_seconds: float = Field(default=1.0, gt=0)
    # An attempt owns its delivery this long; a replica that died mid-attempt frees it then.
    partner_lease_seconds: float = Field(default=120, gt=0)
    partner_concurrency: int = Field(default=8, ge=1)

    # CRM connectors: how often the CRM job looks for pulls owed and reconciliation rounds
    # due (a notification wakes it at once).
    crm_poll_seconds: float = Field(default=5.0, gt=0)
    # A notification's body above this answers 413 (a HubSpot batch is at most 100 events).
    crm_notification_max_bytes: int = Field(default=1024 * 1024, ge=1024)

    # Intake's key store (crypto-shredding): leads' keys to open `lead.received` and to seal
    # what the qualifier publishes, with a token holding `keys:read` (dev mode: `dev`).
    keys_url: str = "http://127.0.0.1:8001"
    keys_token: SecretStr | None = None
    # How long a fetched key is kept in memory (an erasure drops it at once).
    keys_cache_seconds: float = Field(default=60.0, ge=0)

    def key_token(self) -> str:
        if self.keys_token is not None:
            return self.keys_token.get_secret_value()
        return DEV_TOKEN if self.common.dev else ""

    # Fault injection for the exactly-once test, dev mode only: SIGKILL the process right
    # after the N-th consumer batch is committed to the database, before its Kafka offsets.
    fault_kill_after_commit: int | None = Field(default=None, ge=1)

    def partner_secret(self, partner_id: str) -> str | None:
        """The partner's signing secret; the dev secret in dev mode when none is configured."""
        secret = self.partner_secrets.get(partner_id)
        if secret is not None:
            return secret.get_secret_value()
        return DEV_PARTNER_SECRET if self.common.dev else None

    def check_secure(self) -> None:
        super().check_secure()
        if self.common.dev:
            return
        if not self.key_token() or self.key_token() == DEV_TOKEN:
            raise InsecureSettings(
                "production mode needs LEADFLOW_QUALIFIER_KEYS_TOKEN (a token with keys:read)"
            )
        if self.fault_kill_after_commit is not None:
            raise InsecureSettings(
                "LEADFLOW_QUALIFIER_FAULT_KILL_AFTER_COMMIT is a test fault; production refuses it"
            )
        for partner, secret in self.partner_secrets.items():
            value = secret.get_secret_value()
            if value == DEV_PARTNER_SECRET or len(value) < MIN_PARTNER_SECRET_LENGTH:
                raise InsecureSettings(
                    f"the webhook secret of partner {partner!r} is not a real secret "
                    f"(at least {MIN_PARTNER_SECRET_LENGTH} characters, not the dev one)"
                )
