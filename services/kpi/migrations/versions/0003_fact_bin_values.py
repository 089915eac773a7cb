"""durations' values in their bin index, so a percentile reads the index alone

A percentile reads the few durations of one value bin within a period, in order
(`ORDER BY value LIMIT 1 OFFSET n`). With the value in the index that is an index-only
scan instead of a table row fetched for every duration of the bin.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kpi_facts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_kpi_facts_bin_values", ["generation", "metric", "bin", "at", "value"], unique=False
        )
        batch_op.drop_index("ix_kpi_facts_bins")


def downgrade() -> None:
    with op.batch_alter_table("kpi_facts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_kpi_facts_bins", ["generation", "metric", "bin", "at"], unique=False
        )
        batch_op.drop_index("ix_kpi_facts_bin_values")
