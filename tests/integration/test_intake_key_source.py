"""Intake's relay reads its leads' keys on its own connection, in the transaction that
read the batch (`StoreKeySource.fetch(within=...)`), not on a connection of the pool's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.intake.keys.source import StoreKeySource
from services.intake.leads.service import accept_lead
from shared.db import create_engine
from shared.migrations import migrate
from tests.support import snapshot


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate, "intake", database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_keys_are_read_in_the_callers_transaction_when_given_it(engine: AsyncEngine) -> None:
    source = StoreKeySource(engine)
    lead = snapshot(email=f"{uuid.uuid4().hex[:10]}@acme-corp.example")
    async with engine.connect() as conn:
        await accept_lead(conn, lead, dedupe_window=timedelta(0))  # its key, not committed
        within = await source.fetch([lead.lead_id], within=conn)
        apart = await source.fetch([lead.lead_id])
        await conn.rollback()
    assert list(within) == [lead.lead_id]  # the transaction sees its own key
    assert apart == {}  # a connection of its own sees nothing uncommitted
    async with engine.begin() as conn:
        await accept_lead(conn, lead, dedupe_window=timedelta(0))
    assert list(await source.fetch([lead.lead_id])) == [lead.lead_id]  # once committed
