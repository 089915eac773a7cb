"""The KPI's schema as its migrations leave it, where it matters for speed."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import sqlalchemy as sa
from alembic import command

from services.kpi.fold.durations import bin_and_sub, bin_edges, bin_of
from services.kpi.reads import sql
from services.kpi.store import tables, writes
from shared.db import create_engine
from shared.migrations import alembic_config, migrate
from tests.fixtures.kpi.harness import Harness
from tests.support import schema_differences

T = datetime(2026, 10, 1, tzinfo=UTC)


async def test_folded_tables_leave_room_for_in_place_updates(kpi: Harness) -> None:
    async with kpi.runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN "
                "('kpi_aggregates', 'kpi_leads', 'kpi_facts', 'kpi_fine_counts')"
            )
        )
        options = {r.relname: r.reloptions for r in rows}
    assert options == {
        "kpi_aggregates": ["fillfactor=70"],
        "kpi_leads": ["fillfactor=70"],
        "kpi_fine_counts": ["fillfactor=70"],
        "kpi_facts": None,  # its updates change indexed columns: no HOT to make room for
    }


async def test_the_part_index_holds_durations_and_percentile_reads_use_it(kpi: Harness) -> None:
    async with kpi.runtime.engine.connect() as conn:
        definition = await conn.scalar(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_kpi_facts_sub_values'")
        )
        assert "(generation, metric, bin, sub, at, value)" in str(definition)
        assert str(definition).endswith("WHERE (bin > 0)")
        # The reads must say `bin > 0` for the planner to take a partial index.
        await conn.execute(sa.text("SET enable_seqscan = off"))
        for part in (3, sql.EVERY_PART):
            plan = await conn.exec_driver_sql(
                "EXPLAIN " + sql._durations_sql((), None),
                (1, [0], ["proposal_time"], [5], [part], [T], [T], [""], [0], [2]),
            )
            assert "ix_kpi_facts_sub_values" in "\n".join(r[0] for r in plan)
        plan = await conn.exec_driver_sql(
            "EXPLAIN " + sql._PART_COUNTS_SQL,
            (1, [0, 0], ["proposal_time"] * 2, [5, 5], ["m", ""], [T, T], [T, T]),
        )
        text = "\n".join(r[0] for r in plan)
        assert "ix_kpi_facts_sub_values" in text and "kpi_fine_counts_pkey" in text


async def test_the_migrations_make_the_schema_the_tables_describe(kpi: Harness) -> None:
    # services/kpi/tables.py is what the code reads and writes; the migrations are what a
    # database gets. Alembic's comparison finds any table, column, column type or index one
    # has and the other lacks.
    async with kpi.runtime.engine.connect() as conn:
        assert await schema_differences(conn, "kpi", tables.metadata) == []


async def test_0007_and_0008_give_existing_facts_their_parts_and_count_them(
    database_url: str,
) -> None:
    # Facts folded before 0007, by both fold versions' bins, and a staged delta.
    await asyncio.to_thread(migrate, "kpi", database_url, "0006")
    rng = random.Random(7)
    values = [Decimal(0), Decimal(1), Decimal(EDGES[2][-1] + 5), *map(Decimal, EDGES[2][:50])]
    values += [Decimal(rng.randrange(0, 10**12)) / 10**6 for _ in range(400)]
    rows: list[dict[str, Any]] = []
    for generation, version in ((1, 2), (2, 1)):
        for n, value in enumerate(values):
            at = T - timedelta(hours=rng.randrange(24 * 100))
            rows.append(_fact(generation, f"l{n}", "proposal_time", at, value, version))
            rows.append(_fact(generation, f"l{n}", "leads_received", at, Decimal(1), None))
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            # Generation 1 (made by migration 0002) by v2, and a rebuild's by v1.
            await conn.execute(sa.text("UPDATE kpi_generations SET fold_version = 2"))
            await conn.execute(
                sa.text(
                    "INSERT INTO kpi_generations (generation, status, fold_version, created_at) "
                    "VALUES (2, 'building', 1, now())"
                )
            )
            await conn.execute(sa.text(_INSERT_FACT), rows)
            await conn.execute(
                sa.text(
                    "INSERT INTO kpi_fact_deltas VALUES (2, 'proposal_time', :at, 5, 1, "
                    "'web_form', '', '', 'sales', '1')"
                ),
                {"at": T},
            )
        await asyncio.to_thread(migrate, "kpi", database_url, "0007")
        async with engine.connect() as conn:
            expected = await _counted_facts(conn, ("month",))
            counts = await conn.execute(
                sa.text(
                    "SELECT generation, metric, bin, bucket_start, sub, count, total, squares "
                    "FROM kpi_fine_counts"
                )
            )
            assert {(*r[:3], "month", *r[3:5]): list(r[5:]) for r in counts} == expected
            assert len(expected) > 300
            # The staged delta's facts are counted already: it has no part, and adds none.
            assert await conn.scalar(sa.text("SELECT sub FROM kpi_fact_deltas")) is None
        async with engine.begin() as conn:
            # One staged by a rebuild between 0007 and 0008, with its part: counted by 0008.
            await conn.execute(
                sa.text(
                    "INSERT INTO kpi_fact_deltas VALUES (2, 'proposal_time', :at, 5, 1, "
                    "'web_form', '', '', 'sales', '1', 3, 14.5)"
                ),
                {"at": T},
            )
        await asyncio.to_thread(migrate, "kpi", database_url)
        async with engine.connect() as conn:
            expected = await _counted_facts(conn, ("day", "month"))
            counts = await conn.execute(
                sa.text(
                    "SELECT generation, metric, bin, grain, bucket_start, sub, count, total, "
                    "squares FROM kpi_fine_counts"
                )
            )
            grains = {"d": "day", "m": "month"}
            assert {(*r[:3], grains[r[3]], *r[4:6]): list(r[6:]) for r in counts} == expected
            staged = await conn.execute(sa.text("SELECT sub, seconds FROM kpi_fact_deltas"))
            assert list(staged) == [(None, None)] * 2
        async with engine.begin() as conn:
            await writes.compact_fact_deltas(conn, 2)
        async with engine.connect() as conn:
            after = await conn.scalar(sa.text("SELECT sum(count) FROM kpi_fine_counts"))
            assert after == sum(sums[0] for sums in expected.values())
            assert await conn.scalar(
                sa.text("SELECT sum(value) FROM kpi_aggregates WHERE generation = 2")
            )
        # Down to 0006 and up again.
        await asyncio.to_thread(command.downgrade, alembic_config("kpi", database_url), "0006")
        await asyncio.to_thread(migrate, "kpi", database_url)
        async with engine.connect() as conn:
            assert await schema_differences(conn, "kpi", tables.metadata) == []
    finally:
        await engine.dispose()


EDGES = {1: bin_edges(1), 2: bin_edges(2)}


async def _counted_facts(conn: Any, units: tuple[str, ...]) -> dict[tuple[Any, ...], list[Any]]:
    """The counts, sums and sums of squares of each part per UTC day and/or month, from the
    facts; each fact's part checked against the fold's."""
    stored = await conn.execute(
        sa.text(
            "SELECT f.generation, g.fold_version, f.metric, f.at, f.value, f.bin, f.sub "
            "FROM kpi_facts f JOIN kpi_generations g USING (generation)"
        )
    )
    expected: dict[tuple[Any, ...], list[Any]] = {}
    for generation, version, metric, at, value, bin_, sub in stored:
        if bin_ == 0:
            assert sub == 0
            continue
        assert (bin_, sub) == bin_and_sub(value, EDGES[version])  # as the fold's
        day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        starts = {"day": day, "month": day.replace(day=1)}
        for unit in units:
            sums = expected.setdefault(
                (generation, metric, bin_, unit, starts[unit], sub), [0, 0, 0]
            )
            with localcontext(prec=80):  # exact
                sums[0], sums[1], sums[2] = sums[0] + 1, sums[1] + value, sums[2] + value**2
    return expected


_INSERT_FACT = (
    "INSERT INTO kpi_facts (generation, lead_id, metric, item, at, value, bin, source, "
    "channel, campaign, route, definition_version) VALUES (:generation, :lead_id, :metric, "
    "'', :at, :value, :bin, 'web_form', '', '', 'sales', '1')"
)


def _fact(
    generation: int, lead: str, metric: str, at: datetime, value: Decimal, version: int | None
) -> dict[str, Any]:
    bin_ = 0 if version is None else bin_of(value, bin_edges(version))
    return {
        "generation": generation,
        "lead_id": lead,
        "metric": metric,
        "at": at,
        "value": value,
        "bin": bin_,
    }
