"""a rebuild stages its aggregate increments as fact deltas

A rebuild's generation answers no read until it is caught up, so its windows append their
changed facts here (no key, no index) and one statement adds them to kpi_aggregates before
the switch, instead of every window upserting five aggregate rows per changed fact.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kpi_fact_deltas",
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("bin", sa.SmallInteger(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("campaign", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("definition_version", sa.String(length=12), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kpi_fact_deltas")
