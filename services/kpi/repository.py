"""Every query of the KPI service."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kpi.fold import BucketKey
from services.kpi.tables import metric_counts
from shared.db import upsert_adding

_KEY_COLUMNS = (
    "bucket_start", "metric", "source", "channel", "campaign", "route", "definition_version",
)  # fmt: skip


async def add_to_buckets(conn: AsyncConnection, totals: Mapping[BucketKey, Decimal]) -> None:
    """One multi-row upsert that adds each total to its bucket."""
    if not totals:
        return
    rows = [
        {
            "bucket_start": k.bucket_start, "metric": k.metric, "source": k.source,
            "channel": k.channel, "campaign": k.campaign, "route": k.route,
            "definition_version": k.definition_version, "value": v,
        }
        for k, v in totals.items()
    ]  # fmt: skip
    await conn.execute(upsert_adding(conn, metric_counts, _KEY_COLUMNS, ["value"]), rows)


async def sum_metrics(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    filters: Mapping[str, str],
) -> dict[str, Decimal]:
    """Totals per metric over buckets in [start, end), optionally filtered by dimensions."""
    m = metric_counts
    stmt = (
        sa.select(m.c.metric, sa.func.sum(m.c.value))
        .where(m.c.bucket_start >= start, m.c.bucket_start < end)
        .group_by(m.c.metric)
    )
    for column, value in filters.items():
        stmt = stmt.where(m.c[column] == value)
    return {metric: Decimal(str(total)) for metric, total in await conn.execute(stmt)}
