"""kpi_fine_counts by UTC day too

Migration 0007 counted each duration bin's parts per month, so a period cut by days (a week)
counted its parts from the facts, every duration of the bin in those days. Counted per day
as well, a week reads seven rows per part.

The table is built again from the facts, both grains, as 0007 built it: facts are written
directly, even a rebuild's, so they hold every duration. Fact deltas a rebuild staged before
this migration get no part (NULL), so compacting them adds nothing to the counts made here.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _count_from_facts(grains: dict[str, str]) -> None:
    op.execute("DELETE FROM kpi_fine_counts")
    for grain, unit in grains.items():
        op.execute(
            "INSERT INTO kpi_fine_counts (generation, metric, bin, grain, bucket_start, sub, "
            f"count, total, squares) SELECT generation, metric, bin, '{grain}', "
            f"date_trunc('{unit}', at, 'UTC'), sub, count(*), sum(value), sum(value * value) "
            "FROM kpi_facts WHERE bin > 0 GROUP BY 1, 2, 3, 4, 5, 6"
        )
    op.execute("UPDATE kpi_fact_deltas SET sub = NULL, seconds = NULL")


def upgrade() -> None:
    op.add_column(
        "kpi_fine_counts",
        sa.Column("grain", sa.String(length=1), nullable=False, server_default="m"),
    )
    op.alter_column("kpi_fine_counts", "grain", server_default=None)
    op.drop_constraint("kpi_fine_counts_pkey", "kpi_fine_counts", type_="primary")
    op.create_primary_key(
        "kpi_fine_counts_pkey",
        "kpi_fine_counts",
        ["generation", "metric", "bin", "grain", "bucket_start", "sub"],
    )
    _count_from_facts({"d": "day", "m": "month"})


def downgrade() -> None:
    op.execute("DELETE FROM kpi_fine_counts")
    op.drop_constraint("kpi_fine_counts_pkey", "kpi_fine_counts", type_="primary")
    op.drop_column("kpi_fine_counts", "grain")
    op.create_primary_key(
        "kpi_fine_counts_pkey",
        "kpi_fine_counts",
        ["generation", "metric", "bin", "bucket_start", "sub"],
    )
    op.execute(
        "INSERT INTO kpi_fine_counts (generation, metric, bin, bucket_start, sub, count, total, "
        "squares) SELECT generation, metric, bin, date_trunc('month', at, 'UTC'), sub, count(*), "
        "sum(value), sum(value * value) FROM kpi_facts WHERE bin > 0 GROUP BY 1, 2, 3, 4, 5"
    )
    op.execute("UPDATE kpi_fact_deltas SET sub = NULL, seconds = NULL")
