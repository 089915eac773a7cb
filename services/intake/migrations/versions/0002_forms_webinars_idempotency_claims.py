"""forms, webinars, idempotency claims, honeypot flag

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = postgresql.JSONB()


def upgrade() -> None:
    op.create_table(
        "forms",
        sa.Column("form_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("allowed_origins", _JSON, nullable=False),
        sa.Column("field_map", _JSON, nullable=False),
        sa.Column("honeypot_field", sa.String(length=100), nullable=True),
        sa.Column("thank_you_url", sa.String(length=2000), nullable=True),
        sa.Column("consent_field", sa.String(length=100), nullable=True),
        sa.Column("consent_text_version", sa.String(length=50), nullable=True),
        sa.Column("default_phone_region", sa.String(length=2), nullable=True),
        sa.Column("min_fill_seconds", sa.Float(), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("server_key_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("form_id"),
    )
    op.create_table(
        "webinars",
        sa.Column("webinar_id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=True),
        sa.Column("zoom_webinar_id", sa.String(length=32), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("consent_text_version", sa.String(length=50), nullable=False),
        sa.Column("default_phone_region", sa.String(length=2), nullable=True),
        sa.Column("starts_at", shared.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("webinar_id"),
        sa.UniqueConstraint("zoom_webinar_id"),
    )
    # Stored answers stay as they are; a row without one is a request still in flight.
    op.add_column("idempotency_keys", sa.Column("claim_id", sa.String(length=36), nullable=True))
    op.add_column(
        "idempotency_keys",
        sa.Column("locked_until", shared.db.UtcDateTime(timezone=True), nullable=True),
    )
    op.alter_column("idempotency_keys", "status_code", existing_type=sa.Integer(), nullable=True)
    op.alter_column("idempotency_keys", "response", existing_type=_JSON, nullable=True)

    op.add_column(
        "leads",
        sa.Column("honeypot_filled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("leads", "honeypot_filled")

    # In-flight claims have no answer to keep; they cannot live in the old schema.
    op.execute("DELETE FROM idempotency_keys WHERE status_code IS NULL")
    op.alter_column("idempotency_keys", "response", existing_type=_JSON, nullable=False)
    op.alter_column("idempotency_keys", "status_code", existing_type=sa.Integer(), nullable=False)
    op.drop_column("idempotency_keys", "locked_until")
    op.drop_column("idempotency_keys", "claim_id")

    op.drop_table("webinars")
    op.drop_table("forms")
