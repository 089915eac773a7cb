"""durations by part of their bin: kpi_facts.sub, its index, and kpi_fine_counts

A percentile reads, in order, the durations of the bin that holds its rank in the period;
at ten million leads a quarter's 2% bin holds some 60,000 of them. Each bin is now cut in
32 equal parts of its seconds (fold/durations.sub_of), each fact records its part, and
kpi_fine_counts counts each part's durations per UTC month (with their sum and sum of
squares, which tell a part of equal durations), so a read finds the part that holds the
rank and reads only that, or nothing when the part's durations are all equal.

Existing facts get their part from their seconds and their generation's bins (the same
integer arithmetic as the fold's); the counts are built from the facts. Fact deltas a
rebuild staged before this migration have no part (NULL): their facts are already counted
here, so compacting them adds nothing to kpi_fine_counts (the deltas' seconds are NULL too).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUBS = 32


def _geometric_edges(ratio: float, steps: int) -> tuple[int, ...]:
    return tuple(sorted({round(ratio**k) for k in range(steps)}))


# The fold rules' bins when this migration was written (fold/durations.py), frozen here.
EDGES = {1: _geometric_edges(1.2, 118), 2: _geometric_edges(1.02, 1080)}


def upgrade() -> None:
    op.add_column(
        "kpi_facts", sa.Column("sub", sa.SmallInteger(), nullable=False, server_default="0")
    )
    op.add_column("kpi_fact_deltas", sa.Column("sub", sa.SmallInteger(), nullable=True))
    op.add_column(
        "kpi_fact_deltas", sa.Column("seconds", sa.Numeric(precision=20, scale=6), nullable=True)
    )
    op.drop_index("ix_kpi_facts_bin_values", table_name="kpi_facts")

    # Each bounded bin of each fold version: [lo, hi) seconds (the last bin is one part).
    op.execute(
        "CREATE TEMPORARY TABLE bin_bounds (fold_version int, bin int2, lo numeric, hi numeric)"
    )
    bounds = sa.table(
        "bin_bounds",
        sa.column("fold_version", sa.Integer),
        sa.column("bin", sa.SmallInteger),
        sa.column("lo", sa.Numeric),
        sa.column("hi", sa.Numeric),
    )
    op.bulk_insert(
        bounds,
        [
            {"fold_version": v, "bin": b, "lo": 0 if b == 1 else edges[b - 2], "hi": edges[b - 1]}
            for v, edges in EDGES.items()
            for b in range(1, len(edges) + 1)
        ],
    )
    op.execute(
        f"UPDATE kpi_facts AS f SET sub = div((f.value - e.lo) * {SUBS}, e.hi - e.lo)::int2 "
        "FROM kpi_generations AS g, bin_bounds AS e WHERE f.bin > 0 "
        "AND g.generation = f.generation AND e.fold_version = g.fold_version AND e.bin = f.bin"
    )
    op.execute("DROP TABLE bin_bounds")
    op.create_index(
        "ix_kpi_facts_sub_values",
        "kpi_facts",
        ["generation", "metric", "bin", "sub", "at", "value"],
        unique=False,
        postgresql_where=sa.text("bin > 0"),
    )

    op.create_table(
        "kpi_fine_counts",
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("bin", sa.SmallInteger(), nullable=False),
        sa.Column("bucket_start", UtcDateTime(timezone=True), nullable=False),
        sa.Column("sub", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Numeric(), nullable=False),
        sa.Column("squares", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("generation", "metric", "bin", "bucket_start", "sub"),
    )
    # Folding updates the counts in place: room for HOT updates, as migration 0004 gave
    # kpi_aggregates.
    op.execute("ALTER TABLE kpi_fine_counts SET (fillfactor = 70)")
    op.execute(
        "INSERT INTO kpi_fine_counts (generation, metric, bin, bucket_start, sub, count, total, "
        "squares) SELECT generation, metric, bin, date_trunc('month', at, 'UTC'), sub, count(*), "
        "sum(value), sum(value * value) FROM kpi_facts WHERE bin > 0 GROUP BY 1, 2, 3, 4, 5"
    )


def downgrade() -> None:
    op.drop_table("kpi_fine_counts")
    op.drop_index("ix_kpi_facts_sub_values", table_name="kpi_facts")
    op.create_index(
        "ix_kpi_facts_bin_values",
        "kpi_facts",
        ["generation", "metric", "bin", "at", "value"],
        unique=False,
        postgresql_where=sa.text("bin > 0"),
    )
    op.drop_column("kpi_fact_deltas", "seconds")
    op.drop_column("kpi_fact_deltas", "sub")
    op.drop_column("kpi_facts", "sub")
