"""Intake settings (env prefix `LEADFLOW_INTAKE_`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.intake.keys.ring import DEV_MASTER_KEY, DEV_MASTER_KEY_ID, KeyRing, decode_master
from shared.settings import InsecureSettings, ServiceSettings

# What dev mode verifies Zoom signatures with when no secret is configured; documented in
# docs/intake.md so a developer can sign test requests. Production refuses it.
DEV_ZOOM_SECRET_TOKEN = "dev-zoom-secret-token"


class IntakeSettings(ServiceSettings):
    service_name: ClassVar[str] = "intake"
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_INTAKE_", extra="ignore")

    port: int = 8001
    # The same person from the same source and form within this window is a duplicate.
    dedupe_window_hours: float = Field(default=24.0, ge=0)
    idempotency_ttl_hours: float = Field(default=48.0, ge=24)
    # How long a request holds its Idempotency-Key while it works; a crashed request's key
    # is free again after this. Long imports renew it as they go.
    idempotency_lock_seconds: float = Field(default=60.0, gt=0)
    default_phone_region: str = Field(default="RU", pattern=r"^[A-Za-z]{2}$")
    max_json_bytes: int = Field(default=64 * 1024, ge=1024)
    # `POST /v1/leads:batch` and the webinar JSON endpoints take up to 500 people at once.
    max_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_csv_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Public form endpoint, in-process token buckets (per replica): per client IP and per form.
    form_ip_rate_per_minute: float = Field(default=10.0, gt=0)
    form_ip_burst: int = Field(default=10, ge=1)
    form_rate_per_minute: float = Field(default=300.0, gt=0)
    form_burst: int = Field(default=100, ge=1)
    # Zoom's webhook secret token. Unset: dev mode uses DEV_ZOOM_SECRET_TOKEN, production
    # answers Zoom webhooks 404 (not configured).
    zoom_secret_token: SecretStr | None = None
    # Zoom signs a timestamp; older (or newer) than this is a replay and is refused.
    zoom_max_age_seconds: int = Field(default=300, ge=1)
    # Concurrent JSON leads share one transaction and one commit (hot_path.group_commit).
    group_commit: bool = True
    # Batches committing at once; each holds a connection.
    group_commit_writers: int = Field(default=2, ge=1, le=8)
    relay_batch_size: int = 500
    relay_poll_seconds: float = 1.0
    # Master keys wrapping each lead's data key (crypto-shredding): JSON map id -> 32 bytes
    # in base64url; new keys are wrapped by `master_key_id` (rotation: add one, point this
    # at it). Unset: dev mode uses the documented dev key, production refuses to start.
    master_keys: dict[str, SecretStr] = Field(default_factory=dict)
    master_key_id: str | None = None

    def key_ring(self) -> KeyRing:
        if not self.master_keys:
            return KeyRing({DEV_MASTER_KEY_ID: decode_master(DEV_MASTER_KEY)}, DEV_MASTER_KEY_ID)
        masters = {k: decode_master(v.get_secret_value()) for k, v in self.master_keys.items()}
        return KeyRing(masters, self.master_key_id or sorted(masters)[-1])

    def zoom_secret(self) -> str | None:
        """The secret Zoom signatures are checked with, or None when Zoom is not configured."""
        if self.zoom_secret_token is not None and self.zoom_secret_token.get_secret_value():
            return self.zoom_secret_token.get_secret_value()
        return DEV_ZOOM_SECRET_TOKEN if self.common.dev else None

    def check_secure(self) -> None:
        super().check_secure()
        if self.common.dev:
            return
        if not self.master_keys:
            raise InsecureSettings(
                "production mode needs LEADFLOW_INTAKE_MASTER_KEYS (the dev master key is public)"
            )
        self.key_ring()  # a malformed key or an unknown current id refuses to start
        if self.zoom_secret() == DEV_ZOOM_SECRET_TOKEN:
            raise InsecureSettings(
                "production mode refuses the dev Zoom secret in LEADFLOW_INTAKE_ZOOM_SECRET_TOKEN"
            )
