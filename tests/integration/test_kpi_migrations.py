"""The KPI's schema as its migrations leave it, where it matters for speed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.fixtures.kpi.harness import Harness


async def test_folded_tables_leave_room_for_in_place_updates_on_postgresql(kpi: Harness) -> None:
    async with kpi.runtime.engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            pytest.skip("fillfactor is PostgreSQL's")
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
