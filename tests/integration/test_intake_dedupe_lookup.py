"""The duplicate lookup of a group commit on PostgreSQL: exact identities, and a plan
that probes the index per lead however many leads the dedupe window holds."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.dedupe import repository
from services.intake.dedupe.identity import DedupeKey, KnownLead
from shared.db import create_engine
from shared.migrations import migrate

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
WINDOW_LEADS = 3000
# The lookup as a named prepared statement, as asyncpg prepares it for the writer.
PREPARE_RECENT = (
    "PREPARE recent(text[], text[], text[], text[], text[], text[], timestamptz) AS "
    + repository._RECENT_LIKE
)


async def fill_window(conn: AsyncConnection, *, phones: bool) -> None:
    """A busy day: WINDOW_LEADS leads of one source and form received at NOW, lead `lN`
    at `pN@x.example` (and `+7900N` when `phones`)."""
    phone = "'+7900' || g" if phones else "NULL"
    await conn.exec_driver_sql(
        "INSERT INTO leads (lead_id, source, origin_id, email, phone, snapshot, "
        "occurred_at, received_at, honeypot_filled) "
        f"SELECT 'l' || g, 'api', '', 'p' || g || '@x.example', {phone}, '{{}}', "
        "$1, $1, false FROM generate_series(1, $2) AS g",
        (NOW, WINDOW_LEADS),
    )


async def test_the_lookup_probes_the_index_whatever_the_window_holds(database_url: str) -> None:
    await asyncio.to_thread(migrate, "intake", database_url)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            # A busy day: thousands of leads of one source and form within the window,
            # plus a bot's submission and a lead of another form with a known e-mail.
            await fill_window(conn, phones=True)
            await conn.exec_driver_sql(
                "INSERT INTO leads (lead_id, source, origin_id, email, phone, snapshot, "
                "occurred_at, received_at, honeypot_filled) VALUES "
                "('bot', 'api', '', 'p7@x.example', NULL, '{}', $1, $1, true), "
                "('other-form', 'form', 'f1', 'p7@x.example', NULL, '{}', $1, $1, false), "
                "('old', 'api', '', 'gone@x.example', NULL, '{}', $2, $2, false)",
                (NOW, NOW - timedelta(days=3)),
            )
            await conn.exec_driver_sql("ANALYZE leads")

        since = NOW - timedelta(days=1)
        async with engine.connect() as conn:
            found = await repository.recent_leads_like(
                conn,
                [
                    DedupeKey("api", "", "p7@x.example", None),
                    DedupeKey("api", "", "gone@x.example", "+790012"),
                    DedupeKey("form", "f1", None, "+790013"),
                ],
                since,
            )
            # Exact (source, form, identity) matches in the window, no bot's submission.
            assert sorted(found) == sorted(
                [
                    KnownLead("l7", "api", "", "p7@x.example", "+79007", NOW),
                    KnownLead("l12", "api", "", "p12@x.example", "+790012", NOW),
                ]
            )

            # The plan a prepared statement settles on, as asyncpg's would after five runs.
            await conn.exec_driver_sql(PREPARE_RECENT)
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            plan = "\n".join(
                row[0]
                for row in await conn.exec_driver_sql(
                    # A utility statement takes no parameters: the values are literals.
                    "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE recent("
                    "'{api}', '{\"\"}', '{p7@x.example}', '{api}', '{\"\"}', '{+790012}', "
                    f"'{since.isoformat()}')"
                )
            )
    finally:
        await engine.dispose()
    assert "ix_leads_dedupe_email" in plan and "ix_leads_dedupe_phone" in plan, plan
    # Each branch finds its lead through the index: no scan of the window's leads.
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    assert all(n < 10 for n in removed), plan
    visited = [int(n) for n in re.findall(r"Index Scan .*actual time=\S+ rows=(\d+)", plan)]
    assert visited and all(n <= 1 for n in visited), plan


async def test_a_batch_plans_its_lookup_for_the_table_as_it_is_now(database_url: str) -> None:
    """A plan fixed while `leads` was empty would scan it whole for every batch until
    autovacuum first analyzed it; a batch's transaction plans for the table as it is."""
    await asyncio.to_thread(migrate, "intake", database_url)
    engine = create_engine(database_url)
    since = f"'{(NOW - timedelta(days=1)).isoformat()}'"
    explain = (
        "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE recent('{api}', '{\"\"}', '{p7@x.example}', "
        f"'{{}}', '{{}}', '{{}}', {since})"
    )
    try:
        async with engine.connect() as conn:
            # Prepared on the empty table and run as a fresh install's writer runs it: after
            # five runs PostgreSQL settles on a generic plan, made for an empty table.
            await conn.exec_driver_sql(PREPARE_RECENT)
            for _ in range(6):
                await conn.exec_driver_sql(explain)
            await conn.commit()
            # The day fills (autovacuum has not analyzed it yet).
            await fill_window(conn, phones=False)
            await conn.commit()

            kept = "\n".join(r[0] for r in await conn.exec_driver_sql(explain))
            await conn.rollback()
            await repository.lock_identities(conn, [DedupeKey("api", "", "p7@x.example", None)])
            batch = "\n".join(r[0] for r in await conn.exec_driver_sql(explain))
            setting = await conn.scalar(sa.text("SELECT current_setting('plan_cache_mode')"))
            await conn.commit()
            after = await conn.scalar(sa.text("SELECT current_setting('plan_cache_mode')"))
    finally:
        await engine.dispose()
    # The kept plan reads the whole window; the batch's probes the index for its lead.
    assert "Seq Scan on leads" in kept, kept
    assert "Seq Scan on leads" not in batch and "ix_leads_dedupe_email" in batch, batch
    # Only the batch's own transaction plans afresh.
    assert (setting, after) == ("force_custom_plan", "auto")


async def test_identity_indexes_hold_only_leads_with_that_identity(database_url: str) -> None:
    # Up to 0002 and back again: the migration and its downgrade both run.
    for revision in ("0002", "head", "0002", "head"):
        await asyncio.to_thread(migrate, "intake", database_url, revision)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'leads'"
            definitions = dict((await conn.exec_driver_sql(query)).all())
    finally:
        await engine.dispose()
    for identity in ("email", "phone"):
        definition = str(definitions[f"ix_leads_dedupe_{identity}"])
        assert definition.endswith(f"WHERE ({identity} IS NOT NULL)"), definition
