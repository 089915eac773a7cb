"""The KPI database: metric aggregates per hour and dimension, and the inbox."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import UtcDateTime
from shared.inbox import inbox_table

metadata = sa.MetaData()

# One row per (hour, metric, dimensions); increments commute, so replicas may upsert at once.
# Unknown dimension values are '' so they can be part of the primary key.
metric_counts = sa.Table(
    "metric_counts",
    metadata,
    sa.Column("bucket_start", UtcDateTime, primary_key=True),
    sa.Column("metric", sa.String(40), primary_key=True),
    sa.Column("source", sa.String(40), primary_key=True),
    sa.Column("channel", sa.String(200), primary_key=True),
    sa.Column("campaign", sa.String(200), primary_key=True),
    sa.Column("route", sa.String(20), primary_key=True),
    sa.Column("definition_version", sa.String(12), primary_key=True),
    sa.Column("value", sa.Numeric(20, 2), nullable=False),
)
sa.Index("ix_metric_counts_metric_bucket", metric_counts.c.metric, metric_counts.c.bucket_start)

inbox = inbox_table(metadata)
