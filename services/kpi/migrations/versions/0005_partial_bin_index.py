"""the bin index holds durations only

Percentiles read durations (value bin >= 1) by bin; counts and amounts (bin 0), most facts,
were indexed there too and never read through it. Each fact written paid for that entry.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["generation", "metric", "bin", "at", "value"]


def upgrade() -> None:
    with op.batch_alter_table("kpi_facts", schema=None) as batch_op:
        batch_op.drop_index("ix_kpi_facts_bin_values")
        batch_op.create_index(
            "ix_kpi_facts_bin_values",
            COLUMNS,
            unique=False,
            postgresql_where=sa.text("bin > 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("kpi_facts", schema=None) as batch_op:
        batch_op.drop_index("ix_kpi_facts_bin_values")
        batch_op.create_index("ix_kpi_facts_bin_values", COLUMNS, unique=False)
