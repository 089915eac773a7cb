"""The KPI's schema as its migrations leave it, where it matters for speed."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from services.kpi.reads import sql
from services.kpi.store import tables
from tests.fixtures.kpi.harness import Harness
from tests.support import schema_differences

T = datetime(2026, 10, 1, tzinfo=UTC)


async def test_folded_tables_leave_room_for_in_place_updates(kpi: Harness) -> None:
    async with kpi.runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                "('kpi_aggregates', 'kpi_leads', 'kpi_facts')"
            )
        )
        options = {r.relname: r.reloptions for r in rows}
    assert options == {
        "kpi_aggregates": ["fillfactor=70"],
        "kpi_leads": ["fillfactor=70"],
        "kpi_facts": None,  # its updates change indexed columns: no HOT to make room for
    }


async def test_the_bin_index_holds_durations_and_percentile_reads_use_it(kpi: Harness) -> None:
    async with kpi.runtime.engine.connect() as conn:
        definition = await conn.scalar(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_kpi_facts_bin_values'")
        )
        assert str(definition).endswith("WHERE (bin > 0)")
        # The read must say `bin > 0` for the planner to take a partial index.
        await conn.execute(sa.text("SET enable_seqscan = off"))
        plan = await conn.exec_driver_sql(
            "EXPLAIN " + sql._durations_sql((), None),
            (1, [0], ["proposal_time"], [5], [T], [T], [""], [0], [2]),
        )
        assert "ix_kpi_facts_bin_values" in "\n".join(r[0] for r in plan)


async def test_the_migrations_make_the_schema_the_tables_describe(kpi: Harness) -> None:
    # services/kpi/tables.py is what the code reads and writes; the migrations are what a
    # database gets. Alembic's comparison finds any table, column, column type or index one
    # has and the other lacks.
    async with kpi.runtime.engine.connect() as conn:
        assert await schema_differences(conn, "kpi", tables.metadata) == []
