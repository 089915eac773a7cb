"""each lead's data key, for crypto-shredding its personal fields on the topics

Leads stored before this revision have no key: their events on the topics were published
in clear, and an erasure cannot make those copies unreadable (docs/crypto-shredding.md).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lead_keys",
        sa.Column("lead_id", sa.String(36), primary_key=True),
        sa.Column("kid", sa.String(32), nullable=False),
        sa.Column("master_kid", sa.String(64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=True),
        sa.Column("created_at", shared.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", shared.db.UtcDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("lead_keys")
