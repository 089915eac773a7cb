"""idempotency keys: claimed before the work, answered after it (shared.idempotency)

Revision ID: 0004
Revises: 0003

A lifecycle call with an Idempotency-Key now claims its key in a transaction of its own
before the work, so a retry meanwhile answers 409 instead of waiting: a claim has no
answer yet (`status_code` and `response` NULL), names the request holding it
(`claim_id`) and blocks retries until `locked_until`. Stored answers stay as they are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("idempotency_keys", "status_code", existing_type=sa.Integer(), nullable=True)
    op.alter_column(
        "idempotency_keys",
        "response",
        existing_type=postgresql.JSONB(),
        nullable=True,
    )
    op.add_column("idempotency_keys", sa.Column("claim_id", sa.String(length=36), nullable=True))
    op.add_column(
        "idempotency_keys",
        sa.Column("locked_until", shared.db.UtcDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # Claims still without an answer cannot be kept without one: their requests' retries
    # start over.
    op.execute("DELETE FROM idempotency_keys WHERE status_code IS NULL OR response IS NULL")
    op.drop_column("idempotency_keys", "locked_until")
    op.drop_column("idempotency_keys", "claim_id")
    op.alter_column(
        "idempotency_keys",
        "response",
        existing_type=postgresql.JSONB(),
        nullable=False,
    )
    op.alter_column("idempotency_keys", "status_code", existing_type=sa.Integer(), nullable=False)
