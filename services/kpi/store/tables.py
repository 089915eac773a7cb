"""The KPI database: generations of folded tables, plans, spend, and the inbox.

Everything folded from the topics carries a `generation`: the live one answers reads,
and a rebuild folds the topics again into a new one beside it, switched to atomically
once caught up. Plans and spend are entered over HTTP, not folded, so they have none.
"""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import Money, UtcDateTime
from shared.inbox import inbox_table

metadata = sa.MetaData()

DIMENSION_LENGTH = 200

generations = sa.Table(
    "kpi_generations",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True, autoincrement=False),
    # building -> active -> retired; or building -> cancelled
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("fold_version", sa.Integer, nullable=False),
    sa.Column("requested_by", sa.String(100)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("activated_at", UtcDateTime),
    sa.Column("retired_at", UtcDateTime),
    sa.Column("purged_at", UtcDateTime),
    # {topic: {partition: end offset}} observed after the live consumer began to write here too
    sa.Column("targets", sa.JSON),
)
# At most one generation answers reads and at most one is being built: the database says so.
sa.Index(
    "uq_kpi_generations_active",
    generations.c.status,
    unique=True,
    postgresql_where=generations.c.status == "active",
)
sa.Index(
    "uq_kpi_generations_building",
    generations.c.status,
    unique=True,
    postgresql_where=generations.c.status == "building",
)

# How far a rebuild has folded each partition, written in the transaction of each batch.
rebuild_progress = sa.Table(
    "kpi_rebuild_progress",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("topic", sa.String(200), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

# One row per lead: its merged state (services/kpi/fold/lead_state.py), no personal data.
leads = sa.Table(
    "kpi_leads",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("lead_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.JSON),
)


def _dimension_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("source", sa.String(DIMENSION_LENGTH), nullable=False),
        sa.Column("channel", sa.String(DIMENSION_LENGTH), nullable=False),
        sa.Column("campaign", sa.String(DIMENSION_LENGTH), nullable=False),
        sa.Column("route", sa.String(DIMENSION_LENGTH), nullable=False),
        sa.Column("definition_version", sa.String(12), nullable=False),
    ]


# Each lead's facts: a count, a payment, or a duration (seconds, and its value bin), at the
# business time it counts at. Read for the minutes at a period's edges and for percentiles.
facts = sa.Table(
    "kpi_facts",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("lead_id", sa.String(64), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("item", sa.Text, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("value", sa.Numeric(20, 6), nullable=False),
    sa.Column("bin", sa.SmallInteger, nullable=False),
    # The part of its bin a duration is in (fold/durations.sub_of); 0 for other facts.
    sa.Column("sub", sa.SmallInteger, nullable=False, server_default="0"),
    *_dimension_columns(),
)
sa.Index("ix_kpi_facts_at", facts.c.generation, facts.c.at)
# The value too: a percentile reads one part of a bin's durations in a period in order, from
# the index. Durations only (bin >= 1; reads say `bin > 0` so the planner may use it): most
# facts are counts, never read by bin (migrations 0005, 0007).
sa.Index(
    "ix_kpi_facts_sub_values",
    facts.c.generation,
    facts.c.metric,
    facts.c.bin,
    facts.c.sub,
    facts.c.at,
    facts.c.value,
    postgresql_where=facts.c.bin > 0,
)

# Sums of facts per UTC hour, day and month, by every dimension (rollup 0) and in total
# (rollup 1); durations count per value bin. Increments commute: replicas upsert at once.
# Its pages and kpi_leads' keep room for in-place (HOT) updates (migration 0004).
aggregates = sa.Table(
    "kpi_aggregates",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("rollup", sa.SmallInteger, primary_key=True),
    sa.Column("grain", sa.String(1), primary_key=True),
    sa.Column("bucket_start", UtcDateTime, primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("bin", sa.SmallInteger, primary_key=True),
    *[sa.Column(c.name, c.type, primary_key=True, nullable=False) for c in _dimension_columns()],
    sa.Column("value", sa.Numeric(24, 6), nullable=False),
)

# A rebuild's aggregate increments, staged: the changed facts of each window, signed and
# valued as the aggregates count them, appended in the window's transaction and added to
# kpi_aggregates by one statement (store/writes.compact_fact_deltas) before the generation
# answers reads. No key and no index: rows are only appended, then taken by generation.
fact_deltas = sa.Table(
    "kpi_fact_deltas",
    metadata,
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("bin", sa.SmallInteger, nullable=False),
    # A duration's part of its bin and its seconds; NULL in the rows staged before migration
    # 0007, whose durations it counted from the facts.
    sa.Column("sub", sa.SmallInteger),
    sa.Column("seconds", sa.Numeric(20, 6)),
    sa.Column("amount", sa.Numeric(24, 6), nullable=False),
    *_dimension_columns(),
)

# How many durations each part of a bin (fold/durations.sub_of) holds, per UTC day and month
# (grain 'd', 'm'), in total (no dimensions): which part holds a percentile's rank, so only
# that part's durations are read. With their sum and sum of squares: a part whose durations
# in a period are all equal (count * squares = total^2; whole minutes or days make many)
# answers without reading any. Maintained beside the aggregates, from the same fact deltas.
fine_counts = sa.Table(
    "kpi_fine_counts",
    metadata,
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("bin", sa.SmallInteger, primary_key=True),
    sa.Column("grain", sa.String(1), primary_key=True),
    sa.Column("bucket_start", UtcDateTime, primary_key=True),
    sa.Column("sub", sa.SmallInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("total", sa.Numeric, nullable=False),
    sa.Column("squares", sa.Numeric, nullable=False),
)

plans = sa.Table(
    "kpi_plans",
    metadata,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("revenue", Money, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),
)

spend = sa.Table(
    "kpi_spend",
    metadata,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("channel", sa.String(DIMENSION_LENGTH), primary_key=True),
    sa.Column("campaign", sa.String(DIMENSION_LENGTH), primary_key=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),
)

inbox = inbox_table(metadata)
