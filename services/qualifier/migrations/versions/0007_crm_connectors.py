"""crm connectors: their configuration, lead -> CRM record map, pulls owed, notices taken

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "crm_connectors",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("source_text", sa.Text(), nullable=False),
        sa.Column("created_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=True),
        sa.Column("synced_until", shared.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_sync_at", shared.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", shared.db.UtcDateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "crm_records",
        sa.Column("connector_id", sa.String(63), primary_key=True),
        sa.Column("lead_id", sa.String(36), primary_key=True),
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("stage", sa.String(100), nullable=True),
        sa.Column("skipped", sa.Text(), nullable=True),
        sa.Column("pushed_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("erased_at", shared.db.UtcDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("connector_id", "crm_id", name="uq_crm_records_crm_id"),
    )
    op.create_table(
        "crm_pulls",
        sa.Column("connector_id", sa.String(63), primary_key=True),
        sa.Column("crm_id", sa.String(100), primary_key=True),
        sa.Column("requested_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_crm_pulls_due", "crm_pulls", ["next_attempt_at"])
    op.create_table(
        "crm_notices",
        sa.Column("connector_id", sa.String(63), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("received_at", shared.db.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_crm_notices_received_at", "crm_notices", ["received_at"])


def downgrade() -> None:
    op.drop_table("crm_notices")
    op.drop_table("crm_pulls")
    op.drop_table("crm_records")
    op.drop_table("crm_connectors")
